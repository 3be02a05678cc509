"""CLI commands, one module per feature (see neuro/cli.py)."""
