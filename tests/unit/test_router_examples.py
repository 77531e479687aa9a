"""The example router configurations of README's "Scaling out" section (etc/router/) are
accepted by the daemons they are for: BIRD 2 (``bird -p``) and FRR (``vtysh -C``, which
checks a file without a running FRR), and refused once broken, so the check can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROUTER = Path(__file__).resolve().parent.parent.parent / "etc" / "router"
BIRD = "/usr/sbin/bird"
VTYSH = shutil.which("vtysh")


@pytest.mark.skipif(not os.path.exists(BIRD), reason="BIRD 2 (package bird2) is not installed")
def test_bird_accepts_the_bird_example(tmp_path: Path) -> None:
    text = (ROUTER / "bird.conf").read_text()
    assert "merge paths on" in text and "bfd on;" in text and "(65535, 0) ~ bgp_community" in text
    done = subprocess.run([BIRD, "-p", "-c", str(ROUTER / "bird.conf")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    broken = tmp_path / "bird.conf"
    broken.write_text(text.replace("merge paths on limit 16;", "merge paths sometimes;"))
    assert subprocess.run([BIRD, "-p", "-c", str(broken)], capture_output=True, timeout=30).returncode != 0


@pytest.mark.skipif(VTYSH is None, reason="FRR's vtysh (package frr) is not installed")
def test_frr_accepts_the_frr_example(tmp_path: Path) -> None:
    assert VTYSH is not None
    text = (ROUTER / "frr.conf").read_text()
    assert "maximum-paths 16" in text and "bfd profile directors" in text and "graceful-shutdown" in text
    done = subprocess.run([VTYSH, "-C", "-f", str(ROUTER / "frr.conf")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "frr.conf"
    broken.write_text(text.replace("maximum-paths 16", "maximum-paths sixteen"))
    assert subprocess.run([VTYSH, "-C", "-f", str(broken)], capture_output=True, timeout=30).returncode != 0
