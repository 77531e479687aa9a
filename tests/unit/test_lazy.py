"""director.lazy: a package's names imported from their submodules on first use, and argparse
actions whose help is computed when it is read."""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap

import pytest

from director.lazy import LazyHelpAction


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``lazypkg`` offering ``VALUE`` of ``lazypkg.data`` and the submodule ``tools``
    through `director.lazy.lazy_package`; the submodules record their import in ``IMPORTED``."""
    root = tmp_path / "lazypkg"
    root.mkdir()
    (root / "__init__.py").write_text(
        textwrap.dedent(
            """
            from director.lazy import lazy_package

            IMPORTED = []
            __all__ = ["VALUE", "double", "tools"]
            _SOURCES = {"data": ("VALUE", "double"), "tools": ("tools",)}
            __getattr__, __dir__ = lazy_package(__name__, _SOURCES)
            """
        )
    )
    (root / "data.py").write_text(
        "from . import IMPORTED\nIMPORTED.append('data')\nVALUE = 42\ndef double(x):\n    return 2 * x\n"
    )
    (root / "tools.py").write_text("from . import IMPORTED\nIMPORTED.append('tools')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("lazypkg")
    for name in [m for m in sys.modules if m == "lazypkg" or m.startswith("lazypkg.")]:
        del sys.modules[name]


def test_a_name_is_imported_from_its_submodule_on_first_use_and_kept(package):
    assert package.IMPORTED == []
    assert "VALUE" not in vars(package)
    assert package.VALUE == 42
    assert package.IMPORTED == ["data"]
    assert vars(package)["VALUE"] == 42
    assert package.double(3) == 6
    assert package.IMPORTED == ["data"]


def test_a_submodule_named_as_itself_is_the_submodule(package):
    assert package.tools is sys.modules["lazypkg.tools"]
    assert package.IMPORTED == ["tools"]


def test_an_unknown_name_is_an_attribute_error_naming_the_package(package):
    with pytest.raises(AttributeError, match=r"^module 'lazypkg' has no attribute 'nosuch'$"):
        _ = package.nosuch
    with pytest.raises(ImportError):
        exec("from lazypkg import nosuch", {})
    assert package.IMPORTED == []


def test_dir_lists_the_names_not_imported_yet(package):
    names = dir(package)
    assert names == sorted(names)
    assert {"VALUE", "double", "tools", "IMPORTED"} <= set(names)
    assert package.IMPORTED == []


class _Later(LazyHelpAction):
    calls = 0

    def help_text(self) -> str:
        _Later.calls += 1
        return f"computed {_Later.calls}"


def test_the_help_is_computed_when_read_and_parsing_stores_the_value_or_the_const():
    _Later.calls = 0
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("--flag", action=_Later, nargs=0, const=True, default=False, help="ignored")
    parser.add_argument("word", action=_Later)
    assert _Later.calls == 0
    assert vars(parser.parse_args(["--flag", "w"])) == {"flag": True, "word": "w"}
    assert vars(parser.parse_args(["w"])) == {"flag": False, "word": "w"}
    text = parser.format_help()
    assert "computed" in text and "ignored" not in text
    assert _Later.calls >= 2


def test_a_subclass_that_gives_no_help_text_fails_when_the_help_is_read():
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("word", action=LazyHelpAction)
    assert parser.parse_args(["w"]).word == "w"
    with pytest.raises(NotImplementedError):
        parser.format_help()
