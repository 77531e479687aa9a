"""Placeholder: `directord realserver` is being written."""


def add_commands(sub) -> None:
    """Register the `realserver` subcommand(s) on the top-level subparsers ``sub`` (none yet)."""
