"""Typed, frozen domain values.  Protobuf classes never leave ``ion.wire``."""
