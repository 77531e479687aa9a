"""The systemd units with the installed path (`director.units`, ``directord install-units``): the
module's copies are the files in etc/, the command is the one directord runs from (a venv's
console script too), and systemd's own analyser reads the written unit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from director import units

ROOT = Path(__file__).resolve().parents[2]


def test_the_copies_are_the_shipped_files():
    for name, text in units.UNITS.items():
        assert (ROOT / "etc" / name).read_text() == text, name


def test_render_replaces_the_command_in_exec_lines_only():
    text = units.render(units.DAEMON_UNIT, "/opt/directord/bin/directord")
    execs = [line for line in text.splitlines() if line.startswith("Exec")]
    assert execs == [
        "ExecStartPre=/opt/directord/bin/directord check -c /etc/directord/directord.yaml",
        "ExecStart=/opt/directord/bin/directord run -c /etc/directord/directord.yaml",
        "ExecReload=/opt/directord/bin/directord reload -c /etc/directord/directord.yaml",
    ]
    assert units.SHIPPED_COMMAND not in text
    assert text.replace("/opt/directord/bin/directord", units.SHIPPED_COMMAND) == units.UNITS[units.DAEMON_UNIT]
    for bad in ("/opt/my dir/directord", "/opt/%i/directord", "/opt/$X/directord", '/opt/"/directord'):
        with pytest.raises(ValueError):
            units.render(units.DAEMON_UNIT, bad)


def test_installed_command_prefers_argv0_then_the_script_beside_python(tmp_path):
    script = tmp_path / "bin" / "directord"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    python = tmp_path / "bin" / "python3"
    assert units.installed_command(str(script), "/usr/bin/python3") == str(script)
    assert units.installed_command("/work/director/cli.py", str(python)) == str(script)
    assert units.installed_command("-c", "/nowhere/bin/python3") == "/nowhere/bin/python3 -m director.cli"


def test_install_units_writes_this_directords_path_and_systemd_reads_it(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "director.cli", "install-units", "--dest", str(tmp_path), "--realserver"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert out.returncode == 0, out.stderr
    command = units.installed_command(executable=sys.executable, argv0="-m")
    for name in (units.DAEMON_UNIT, units.REALSERVER_UNIT):
        text = (tmp_path / name).read_text()
        assert f"ExecStart={command} " in text, text
        assert oct((tmp_path / name).stat().st_mode & 0o777) == "0o644"
    assert f"wrote {tmp_path / units.DAEMON_UNIT}" in out.stdout
    if shutil.which("systemd-analyze"):
        check = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", str(tmp_path / units.DAEMON_UNIT)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Overall exposure level" in check.stdout, check.stdout + check.stderr


def test_a_venv_install_names_its_own_directord(tmp_path):
    """A venv (with the system's site-packages, so nothing is downloaded) whose directord is
    this source tree: its console script is what the units and --persist's unit name."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(env_dir)
    (env_dir / "bin" / "directord").write_text(
        f"#!{env_dir / 'bin' / 'python'}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from director.cli import main\nsys.exit(main())\n"
    )
    (env_dir / "bin" / "directord").chmod(0o755)
    out = subprocess.run(
        [str(env_dir / "bin" / "directord"), "install-units", "--dest", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"ExecStart={env_dir / 'bin' / 'directord'} run -c " in (tmp_path / units.DAEMON_UNIT).read_text()
    code = "from director.realserver.persist import unit_text; print(unit_text())"
    persisted = subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-c",
            f"import sys; sys.argv[0] = {str(env_dir / 'bin' / 'directord')!r}; "
            f"sys.path.insert(0, {str(ROOT)!r}); " + code,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"ExecStart={env_dir / 'bin' / 'directord'} realserver prep" in persisted.stdout, persisted.stderr
