"""Placeholder: `directord convert` is being written."""


def add_commands(sub) -> None:
    """Register the `convert` subcommand(s) on the top-level subparsers ``sub`` (none yet)."""
