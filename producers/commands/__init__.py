"""Subcommands of the ``lightmem`` command line, one module per group."""
