"""Shared set-up of the kernel tests (tests that need IPVS and root).

Every test under tests/kernel is marked ``kernel`` automatically, so
``pytest -m "not kernel"`` leaves them out. They run where ``ip_vs`` exists or
can be loaded; elsewhere they are skipped, unless ``DIRECTORD_REQUIRE_KERNEL=1``
(set by ``tests/run`` for the run inside the stock-kernel VM), where a missing
``ip_vs`` fails them instead of silently skipping.

Fixtures:

* ``lab``: a DR lab (client, dir1, rs1..rs3, VIP on dir1, httpd on every real
  server), one per test module (module-scoped fixtures may build on it). Tests
  that break real servers restore them with ``lab.reset_real_servers()``
  (links up, HTTP servers running, answering 200) and leave the IPVS table
  empty (``lab.exec(lab.director, ["ipvsadm", "-C"])``).
* ``lab_factory``: ``make(**Lab kwargs) -> Lab`` for labs of other shapes,
  torn down after the test.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest

from director.lab.site import Lab

KERNEL_DIR = Path(__file__).parent
_counter = itertools.count(1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if KERNEL_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.kernel)


def _ip_vs_problem() -> str | None:
    """None if IPVS is usable here, else why not."""
    if os.geteuid() != 0:
        return "kernel tests need root"
    if not os.path.exists("/proc/net/ip_vs"):
        subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True)
    if not os.path.exists("/proc/net/ip_vs"):
        return "this kernel has no ip_vs (tests/run runs these tests in a stock-kernel VM)"
    return None


@pytest.fixture(scope="session")
def _ipvs_problem() -> str | None:
    return _ip_vs_problem()


@pytest.fixture(autouse=True)
def _require_ipvs(_ipvs_problem):
    if _ipvs_problem:
        if os.environ.get("DIRECTORD_REQUIRE_KERNEL") == "1":
            pytest.fail(_ipvs_problem)
        pytest.skip(_ipvs_problem)


def unique_prefix() -> str:
    """A namespace prefix unique to this process and call (``kt<pid>-<n>``)."""
    return f"kt{os.getpid()}-{next(_counter)}"


@pytest.fixture(scope="module")
def lab(_ipvs_problem):
    if _ipvs_problem:
        pytest.skip(_ipvs_problem)
    with Lab(unique_prefix(), real_servers=3, mode="dr") as the_lab:
        yield the_lab


@pytest.fixture
def lab_factory():
    labs: list[Lab] = []

    def make(**kwargs) -> Lab:
        the_lab = Lab(kwargs.pop("prefix", unique_prefix()), **kwargs)
        labs.append(the_lab)
        return the_lab.build()

    yield make
    for the_lab in reversed(labs):
        the_lab.close()
