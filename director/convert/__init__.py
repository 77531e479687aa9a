"""`directord convert`: an ldirectord (+ heartbeat) site as a directord configuration.

The migration tool, apart from the daemon: no module of the daemon imports
this package (`director.cli` loads it by name, from ``COMMAND_MODULES``); it
uses `director.config` (quoting, and the loader that checks its output),
`director.model`, and `ha.config` (heartbeat's words and times), `ha.durable`
and `ha.readfile`.  Its modules, each importing only ones listed before it:

* `issues`: `Issue`, `Issues`, `ConvertError` (messages tied to an input line);
* `ldirectord`: reading ldirectord.cf as ldirectord 4.12 does (`parse_ldirectord`);
* `services`: ldirectord's virtuals as ``virtual_services`` entries (`translate_services`);
* `heartbeat`: ha.cf and haresources as the ``ha:`` section (`convert_ha`);
* `notify`: haresources' resource scripts and ldirectord's ``fallbackcommand``
  as ``notify:`` hooks (`resource_hooks`, `fallback_hooks`);
* `driver`: the conversion as a whole (`convert_text`, `convert_files`,
  `write_atomic`) and the command (`cmd_convert`, `add_commands`).

This module re-exports the driver's public names, which `director.cli`
(through ``add_commands``) and the tests use.
"""

from __future__ import annotations

from director.convert.driver import (
    MAX_INPUT_BYTES,
    QUIESCENT_NOTE,
    Conversion,
    ConvertError,
    Issue,
    add_commands,
    cmd_convert,
    convert_files,
    convert_text,
    write_atomic,
)

__all__ = [
    "MAX_INPUT_BYTES",
    "QUIESCENT_NOTE",
    "Conversion",
    "ConvertError",
    "Issue",
    "add_commands",
    "cmd_convert",
    "convert_files",
    "convert_text",
    "write_atomic",
]
