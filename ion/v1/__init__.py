"""Generated protobuf code for the ion.v1 wire schema: see proto/ and ion.wire."""
