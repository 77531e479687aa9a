"""`directord`'s start-up: building the parser and running a light command (one request to the
control socket) imports none of the tools' modules (the converter and the configuration loader
behind it, the lab's scenarios, the real server's kernel layer and files): each command imports
its implementation when it runs. The packages keep offering their names (lazily)."""

from __future__ import annotations

import pytest
from freshpython import fresh_modules

#: Modules a light command must not import (each costs milliseconds to tens of milliseconds).
HEAVY = (
    "director.convert.driver",
    "director.config.builder",
    "director.lab.ecmp_scenarios",
    "director.lab.scenarios",
    "director.realserver.commands",
    "director.realserver.kernel",
    "director.realserver.persist",
)


@pytest.mark.parametrize(
    "argv,status",
    [
        (None, None),  # the parser alone
        (["bgp", "status"], 2),
        (["bgp", "drain"], 2),
        (["rs", "drain", "web", "10.0.0.1:80"], 2),
        (["standby"], 1),
    ],
)
def test_a_light_command_imports_no_tool(tmp_path, argv, status):
    socket = str(tmp_path / "missing" / "directord.sock")
    code = "from director import cli\nresult = cli.build_parser() and None\n"
    if argv is not None:
        code += f"result = cli.main({argv + ['--control-socket', socket]!r})\n"
    result, modules = fresh_modules(code)
    assert result == status
    loaded = set(modules)
    assert "director.cli" in loaded
    assert [m for m in HEAVY if m in loaded] == []


def test_the_packages_still_offer_every_name():
    code = (
        "import sys\n"
        "import director.convert as C, director.realserver as R\n"
        "result = [[n for n in m.__all__ if getattr(m, n, None) is None] for m in (C, R)]\n"
        "result.append(sorted(set(C.__all__) - set(dir(C))) + sorted(set(R.__all__) - set(dir(R))))\n"
        "from director.convert import convert_text\n"
        "from director.convert.driver import convert_files\n"
        "result.append(C.convert_files is convert_files and 'director.convert.driver' in sys.modules)\n"
        "result.append(R.plan.__module__)\n"
    )
    result, _ = fresh_modules(code)
    assert result == [[], [], [], True, "director.realserver.planner"]


def test_an_unknown_name_of_a_package_is_an_attribute_error():
    import director.convert
    import director.realserver

    for package in (director.convert, director.realserver):
        with pytest.raises(AttributeError, match="no_such_name"):
            package.no_such_name  # noqa: B018
        with pytest.raises(ImportError, match="no_such_name"):
            exec(f"from {package.__name__} import no_such_name")


def test_the_registered_commands_are_the_packages_entry_points():
    import director.convert
    import director.realserver
    from director.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["convert", "--ldirectord", "x.cf"]).func is director.convert.cmd_convert
    assert parser.parse_args(["realserver", "prep", "--vip", "10.0.0.1"]).func is director.realserver.cmd_prep
    assert parser.parse_args(["realserver", "undo"]).func is director.realserver.cmd_undo
    assert parser.parse_args(["realserver", "status"]).func is director.realserver.cmd_status


def test_the_drill_help_and_choices_name_every_scenario(capsys):
    from director.cli import build_parser
    from director.lab.ecmp_scenarios import ECMP_SCENARIOS
    from director.lab.scenarios import SCENARIOS, scenario_names

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "drill", "--help"])
    text = capsys.readouterr().out
    for s in [*SCENARIOS.values(), *ECMP_SCENARIOS.values()]:
        assert s.name in text and " ".join(s.summary.split()[:4]) in " ".join(text.split())
    for name in [*scenario_names(), *ECMP_SCENARIOS]:
        assert parser.parse_args(["lab", "drill", name]).scenario == name
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "drill", "no-such-drill"])
    assert "invalid choice: 'no-such-drill'" in capsys.readouterr().err
