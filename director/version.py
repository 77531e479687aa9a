"""directord's version, as `--version`, the metrics (``directord_build_info``) and the status page show it."""

from __future__ import annotations

import importlib.metadata
import os
import tomllib

__all__ = ["version"]


def version() -> str:
    """directord's version: from the installed distribution's metadata, else (a source tree that
    was never installed) from the ``pyproject.toml`` beside the ``director`` package, else
    ``"unknown"``."""
    try:
        return importlib.metadata.version("directord")
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
    try:
        with open(pyproject, "rb") as f:
            project = tomllib.load(f).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return "unknown"
    if project.get("name") == "directord" and isinstance(project.get("version"), str):
        return f"{project['version']} (source tree)"
    return "unknown"
