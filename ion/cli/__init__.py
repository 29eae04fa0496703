"""The ``ion`` command line."""
