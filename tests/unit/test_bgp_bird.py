"""BIRD's configuration rendered from the bgp section (`ha.bgp.bird`): byte for byte against a
reviewed file, accepted by the real BIRD's parser (``bird -p``), and no value of the model can
end a string or a statement early."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from ha.bgp.bird import UnsafeValueError, protocol_name, render_bird_config
from ha.bgp.model import BfdSettings, BgpConfig, Neighbor, VipAnnouncement

DATA = Path(__file__).resolve().parent.parent / "data" / "bgp"
BIRD = shutil.which("bird") or "/usr/sbin/bird"
A = "192.0.2.10"


def full_config() -> BgpConfig:
    """Two neighbours (IPv4 with a password and BFD; IPv6 multihop without BFD), three VIPs."""
    return BgpConfig(
        local_as=65001,
        router_id="10.99.0.1",
        neighbors=(
            Neighbor("10.99.0.254", 65000, "r1", password="s3cr#t"),
            Neighbor("2001:db8::1", 65000, "r6", bfd=False, multihop=2, source_address="2001:db8::2"),
        ),
        vips=(
            VipAnnouncement(
                "192.0.2.10", communities=((65001, 100),), large_communities=((65001, 1, 2),), med=50, prepend=2
            ),
            VipAnnouncement("192.0.2.11"),
            VipAnnouncement("2001:db8:1::10"),
        ),
    )


def test_full_config_byte_for_byte() -> None:
    text = render_bird_config(full_config(), source="/etc/directord/directord.yaml")
    assert text == (DATA / "bird-full.conf").read_text()


def test_what_the_file_says() -> None:
    text = render_bird_config(full_config())
    # the kernel table is learned, BIRD never writes the kernel
    assert "kernel table 221;\n  learn;" in text
    assert text.count("export none;") == 2
    # GRACEFUL_SHUTDOWN (RFC 8326) on routes of protocol 0xde, with LOCAL_PREF 0
    assert "if krt_source = 222 then { bgp_community.add((65535, 0)); bgp_local_pref = 0; }" in text
    assert text.count("graceful restart off;") == 2
    assert "bfd on;" in text and text.count("bfd on;") == 1
    assert "interval 100 ms; multiplier 3;" in text
    assert protocol_name(full_config().neighbors[0]) == "bgp_r1"


def test_only_versions_with_a_neighbour_and_no_bfd_protocol_without_bfd() -> None:
    cfg = BgpConfig(
        local_as=65001,
        neighbors=(Neighbor("10.0.0.1", 65000, "r1", bfd=False),),
        vips=(VipAnnouncement("192.0.2.10"), VipAnnouncement("2001:db8::10")),
        bfd=BfdSettings(50, 5),
    )
    text = render_bird_config(cfg)
    assert "ipv6" not in text and "2001:db8" not in text
    assert "protocol bfd" not in text
    assert "router id" not in text


@pytest.mark.skipif(not Path(BIRD).exists(), reason="bird (Debian package bird2) is not installed")
def test_bird_parses_it(tmp_path: Path) -> None:
    path = tmp_path / "bird.conf"
    path.write_text(render_bird_config(full_config()))
    done = subprocess.run([BIRD, "-p", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # and refuses a broken one, so the check above can fail
    path.write_text(render_bird_config(full_config()).replace("hold time 3;", "hold time;", 1))
    assert subprocess.run([BIRD, "-p", "-c", str(path)], capture_output=True, timeout=30).returncode != 0


@pytest.mark.parametrize(
    "change",
    [
        {"neighbors": (Neighbor("10.0.0.1", 65000, 'r1"; }'),)},
        {"neighbors": (Neighbor("10.0.0.1", 65000, "r1", password='a"b'),)},
        {"neighbors": (Neighbor("10.0.0.1", 65000, "r1", password="a\\b"),)},
        {"neighbors": (Neighbor("10.0.0.1", 65000, "r1", password="a\nb"),)},
        {"neighbors": (Neighbor("10.0.0.1; protocol", 65000, "r1"),)},
        {"router_id": "2001:db8::1"},
        {"vips": (VipAnnouncement("192.0.2.10", communities=((70000, 1),)),)},
        {"vips": (VipAnnouncement("192.0.2.10", prepend=17),)},
        {"local_as": 2**32},
    ],
)
def test_unsafe_values_are_refused(change: dict[str, object]) -> None:
    base = BgpConfig(local_as=65001, neighbors=(Neighbor("10.0.0.1", 65000, "r1"),), vips=(VipAnnouncement(A),))
    cfg = dataclasses.replace(base, **change)  # type: ignore[arg-type]
    with pytest.raises(UnsafeValueError):
        render_bird_config(cfg)
