"""Models on a node: the artifact value, packing, chunked transfer and the per-node store."""
