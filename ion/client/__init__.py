"""The operator's side of the wire: a short-lived, synchronous MQTT session for the CLI."""
