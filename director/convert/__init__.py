"""`directord convert`: an ldirectord (+ heartbeat) site as a directord configuration.

The migration tool, apart from the daemon: no module of the daemon imports
this package (`director.cli` loads its `cli` by name, from ``COMMAND_MODULES``); it
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
  `write_atomic`) and the command's implementation (`driver.cmd_convert`);
* `cli`: the command's arguments (`add_commands`, which `director.cli` calls)
  and its entry point `cmd_convert`, which imports `driver` when it runs.

This module offers the public names of `driver`, `issues` and `cli`, each
imported from its module on first use (PEP 562 ``__getattr__``, made by
`director.lazy.lazy_package`): every ``directord`` command imports this package
to build its parser, and `driver` brings the configuration loader (a fifth of a
second).
"""

from __future__ import annotations

from ..lazy import lazy_package

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

#: The module of each name of `__all__`, imported when the name is first asked for.
_SOURCES = {
    "cli": ("add_commands", "cmd_convert"),
    "issues": ("ConvertError", "Issue"),
    "driver": ("MAX_INPUT_BYTES", "QUIESCENT_NOTE", "Conversion", "convert_files", "convert_text", "write_atomic"),
}
__getattr__, __dir__ = lazy_package(__name__, _SOURCES)
