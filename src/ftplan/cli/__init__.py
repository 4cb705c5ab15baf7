"""Command-line interface: thin commands over the library (one file per command group)."""
