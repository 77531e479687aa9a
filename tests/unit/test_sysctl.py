"""Tests of director.sysctl, the one owner of /proc/sys access: the paths of the keys the
realserver table and the lab use, the refusal of ``..``, and reads and writes (on a copy of the
tree in a temporary directory, and on the host's /proc/sys read-only)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from director import sysctl
from director.lab.netns import sysctl_path
from director.realserver import sysctl as rsysctl


def test_the_path_of_a_key_is_under_proc_sys():
    assert sysctl.proc_path("net/ipv4/ip_forward") == "/proc/sys/net/ipv4/ip_forward"
    assert sysctl.proc_path("net/ipv4/conf/eth0.100/arp_ignore") == "/proc/sys/net/ipv4/conf/eth0.100/arp_ignore"


@pytest.mark.parametrize("key", ["..", "net/../../etc/passwd", "net/ipv4/conf/../../../../etc/shadow"])
def test_a_key_leaving_proc_sys_is_refused(key):
    with pytest.raises(ValueError, match="invalid sysctl key"):
        sysctl.proc_path(key)
    with pytest.raises(ValueError):
        sysctl.read_sysctl(key)
    with pytest.raises(ValueError):
        sysctl.write_sysctl(key, 1)


def test_the_realserver_table_paths():
    paths = [sysctl.proc_path(key) for key, _ in rsysctl.wanted("tun", ["eth0", "eth0.100"])]
    assert paths == [
        "/proc/sys/net/ipv4/conf/all/arp_ignore",
        "/proc/sys/net/ipv4/conf/lo/arp_ignore",
        "/proc/sys/net/ipv4/conf/eth0/arp_ignore",
        "/proc/sys/net/ipv4/conf/eth0.100/arp_ignore",
        "/proc/sys/net/ipv4/conf/all/arp_announce",
        "/proc/sys/net/ipv4/conf/lo/arp_announce",
        "/proc/sys/net/ipv4/conf/eth0/arp_announce",
        "/proc/sys/net/ipv4/conf/eth0.100/arp_announce",
        "/proc/sys/net/ipv4/conf/all/rp_filter",
        "/proc/sys/net/ipv4/conf/tunl0/rp_filter",
    ]


@pytest.mark.parametrize(
    "display,path",
    [
        ("net.ipv4.conf.all.arp_ignore", "/proc/sys/net/ipv4/conf/all/arp_ignore"),
        ("net.ipv4.conf.eth0/100.rp_filter", "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"),
    ],
)
def test_the_realserver_and_the_lab_forms_reach_the_same_path(display, path):
    assert sysctl.proc_path(rsysctl.path_key(display)) == path
    assert sysctl_path(rsysctl.path_key(display)) == path


def test_write_then_read_on_a_copy_of_the_tree(tmp_path, monkeypatch):
    (tmp_path / "net" / "ipv4" / "conf" / "eth0").mkdir(parents=True)
    target = tmp_path / "net" / "ipv4" / "conf" / "eth0" / "arp_ignore"
    target.write_text("0\n")
    monkeypatch.setattr(sysctl, "PROC_SYS", str(tmp_path))
    key = "net/ipv4/conf/eth0/arp_ignore"
    assert sysctl.read_sysctl(key) == "0"
    sysctl.write_sysctl(key, 1)
    assert target.read_text() == "1\n"
    assert sysctl.read_sysctl(key) == "1"
    with pytest.raises(FileNotFoundError):
        sysctl.read_sysctl("net/ipv4/conf/nosuchif/arp_ignore")
    with pytest.raises(FileNotFoundError):
        sysctl.write_sysctl("net/ipv4/conf/nosuchif/arp_ignore", 1)


def test_reads_the_hosts_values():
    assert sysctl.read_sysctl("kernel/ostype") == "Linux"
    with pytest.raises(FileNotFoundError):
        sysctl.read_sysctl("net/ipv4/conf/no-such-interface-x/arp_ignore")


def test_director_sysctl_is_the_only_module_that_names_proc_sys():
    """No string of director/, ha/ or checks/ but director/sysctl.py starts with ``/proc/sys``
    (docstrings aside): a new reader or writer of sysctls goes through `director.sysctl`."""
    root = Path(__file__).resolve().parents[2]
    found = []
    for package in ("director", "ha", "checks"):
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel == "director/sysctl.py":
                continue
            tree = ast.parse(path.read_text(), rel)
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and node.body
                and isinstance(node.body[0], ast.Expr)
                and isinstance(node.body[0].value, ast.Constant)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and node.value.startswith("/proc/sys")
                    and id(node) not in docstrings
                ):
                    found.append(f"{rel}:{node.lineno}")
    assert found == []
