"""Work that ``directord``'s start-up leaves until it is needed.

Every ``directord`` command builds the whole parser, so it imports the tools' packages
(`director.convert`, `director.realserver`) and their ``cli`` modules: what they would import or
compute at once, every command would pay for. This module holds the two ways they defer it:

* `lazy_package`: a package's public names, each imported from its submodule on first use
  (PEP 562 module ``__getattr__`` and ``__dir__``);
* `LazyHelpAction`: an argparse action whose help is computed when it is read (the help, the
  manual page, the completion script), not when the parser is built.

It imports argparse and the rest of the standard library only.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_package(
    package: str, sources: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The PEP 562 ``(__getattr__, __dir__)`` of the package named ``package``, whose public
    names stand in its submodules: ``sources`` maps a submodule's name (relative: ``"driver"``)
    to the names taken from it. A name equal to its submodule's name is the submodule itself.

    Called from the package's ``__init__`` (the package is in `sys.modules` while it is being
    imported), as ``__getattr__, __dir__ = lazy_package(__name__, _SOURCES)``.

    The ``__getattr__`` returned imports the submodule of a name when the name is first asked
    for and keeps the value in the package's globals (later lookups do not reach it); it raises
    AttributeError (``module 'PACKAGE' has no attribute 'NAME'``) for a name of no submodule.
    The ``__dir__`` returned lists the package's globals and its ``__all__``, names not
    imported yet included, sorted.

    Raises:
        KeyError: no package ``package`` in `sys.modules`.
    """
    namespace = vars(sys.modules[package])
    module_of = {name: module for module, names in sources.items() for name in names}

    def __getattr__(name: str) -> Any:
        """The public ``name``, imported from its submodule on first use and kept in the package.

        Raises:
            AttributeError: not a name of this package (nor a submodule imported already).
        """
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = importlib.import_module(f"{package}.{module}")
        if name != module:
            value = getattr(value, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        """The names of this package, those not imported yet included."""
        return sorted(set(namespace) | set(namespace["__all__"]))

    return __getattr__, __dir__


class LazyHelpAction(argparse.Action):
    """An argparse action whose ``help`` is `help_text`, called each time the help is read,
    so that what it names (a module's constants, the scenarios' names) is imported when the help
    is shown, not when the parser is built. A ``help=`` given to ``add_argument`` is ignored.

    Parsing stores, under the action's ``dest``, its ``const`` when it takes no argument
    (``nargs=0``: a flag), else the argument(s) as parsed. A subclass gives `help_text`.
    """

    @property
    def help(self) -> str | None:
        """The argument's help (`help_text`)."""
        return self.help_text()

    @help.setter
    def help(self, value: str | None) -> None:  # argparse.Action.__init__ sets it
        pass

    def help_text(self) -> str | None:
        """The argument's help, computed now; None for none.

        Raises:
            NotImplementedError: the subclass does not say.
        """
        raise NotImplementedError

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
