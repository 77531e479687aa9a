"""`ha.bgp.speaker.BirdSpeaker` running a real BIRD 2 in a network namespace, with a second,
plain BIRD in another namespace as the router (joined by a veth; ``routerbird.py``).

Root only; skipped when /usr/sbin/bird is missing (Debian package bird2)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from routerbird import BIRD, director_address, needs_bird, router_address, router_pair

from director.lab import netns as N
from ha.bgp.birdctl import bird_command, parse_bgp_detail
from ha.bgp.speaker import BirdConfigError, BirdSpeaker, SpeakerError, SpeakerEvent

PREFIX = f"bsp{os.getpid()}"
NET = 231
DIRECTOR = director_address(NET)
ROUTER = router_address(NET)
VIP = "192.0.2.10"

pytestmark = needs_bird


def director_config(extra: str = "") -> str:
    """What the speaker runs: learn table 221 from the kernel, announce it to the router."""
    return (
        textwrap.dedent(
            f"""\
        router id {DIRECTOR};
        ipv4 table vips;
        protocol device {{}}
        protocol kernel k221 {{
            kernel table 221;
            learn;
            ipv4 {{ table vips; import all; export none; }};
        }}
        protocol bgp r1 {{
            local {DIRECTOR} as 65001;
            neighbor {ROUTER} as 65000;
            hold time 3;
            connect delay time 1;
            connect retry time 1;
            error wait time 1, 2;
            ipv4 {{ table vips; import none; export all; next hop self; }};
        }}
        """
        )
        + extra
    )


@pytest.fixture
def pair(tmp_path):
    """Namespaces (director, router) on one veth; a BIRD runs in the router's namespace.
    Yields (director namespace, router namespace, router's control socket)."""
    with router_pair(PREFIX, NET, tmp_path) as names:
        yield names


async def wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    """Poll the coroutine function ``predicate`` until it returns a true value (returned)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


async def established(speaker: BirdSpeaker):
    sessions = await speaker.sessions()
    return sessions if [s.name for s in sessions if s.established] == ["r1"] else None


async def router_routes(ctl: str) -> list[str]:
    """The router's routes to the VIP (``show route``: a "Table master4:" line, then a line per route)."""
    reply = await bird_command(ctl, "show route")
    return [line.text for line in reply.lines if line.code == 1007 and line.text.startswith(f"{VIP}/32 ")]


async def router_session(ctl: str):
    return parse_bgp_detail(await bird_command(ctl, "show protocols all dir1"))


async def test_speaker_runs_supervises_and_stops_bird(pair, tmp_path):
    a, b, router_ctl = pair
    run_dir = str(tmp_path / "run")
    events: list[SpeakerEvent] = []
    speaker = BirdSpeaker(
        run_dir,
        director_config(),
        command_prefix=("ip", "netns", "exec", a),
        on_event=events.append,
        backoff_initial=0.2,
    )
    down = await speaker.sessions()
    assert len(down) == 1 and down[0].state == "down" and down[0].info == "BIRD is not running"
    await speaker.start()
    try:
        assert speaker.running and [e.kind for e in events] == ["started"]
        assert oct(os.stat(run_dir).st_mode & 0o777) == "0o700"
        assert oct(os.stat(speaker.config_path).st_mode & 0o777) == "0o600"
        with open(speaker.config_path) as f:
            assert f.read() == director_config()
        with open(speaker.pid_path) as f:
            assert int(f.read()) == speaker.pid
        # BIRD runs in the director's namespace
        assert os.readlink(f"/proc/{speaker.pid}/ns/net") != os.readlink("/proc/self/ns/net")

        sessions = await wait_for(lambda: established(speaker), 8, "session Established")
        assert sessions[0].proto == "BGP" and sessions[0].state == "up"

        # a VIP route in table 221 reaches the router
        subprocess.run(
            ["ip", "-n", a, "route", "add", f"{VIP}/32", "dev", "lo", "table", "221", "proto", "0xdd"], check=True
        )
        routes = await wait_for(lambda: router_routes(router_ctl), 5, "VIP route at the router")
        assert len(routes) == 1 and "[AS65001i]" in routes[0]

        # a second speaker on the same run directory is refused: a BIRD answers there
        with pytest.raises(SpeakerError, match="already answers"):
            await BirdSpeaker(run_dir, director_config(), command_prefix=("ip", "netns", "exec", a)).start()

        # a refused configuration: BIRD's message, the old BIRD and bird.conf unchanged
        pid = speaker.pid
        with pytest.raises(BirdConfigError) as refused:
            await speaker.reconfigure(director_config("protocol bgp r2 { local as 65001; neighbor 10.9.9.9 as ; }\n"))
        assert "syntax error" in str(refused.value) and "bird.conf.new:" in refused.value.lines[0]
        assert speaker.pid == pid and speaker.running
        with open(speaker.config_path) as f:
            assert f.read() == director_config()
        assert await established(speaker)

        # an accepted one is loaded without a restart; the session stays up
        assert await speaker.reconfigure(director_config("# another comment\n")) == "Reconfigured"
        assert speaker.pid == pid and await established(speaker)
        assert events[-1] == SpeakerEvent("reconfigured", "Reconfigured")

        # BIRD killed: reported, restarted, the session comes back, the route with it
        os.kill(pid, signal.SIGKILL)

        async def restarted():
            return speaker.restarts == 1

        await wait_for(restarted, 6, "restart")
        kinds = [e.kind for e in events]
        assert kinds[-2:] == ["exited", "restarted"], events
        assert "killed by SIGKILL" in events[-2].detail
        assert speaker.pid != pid and speaker.running
        await wait_for(lambda: established(speaker), 8, "session Established again")
        await wait_for(lambda: router_routes(router_ctl), 5, "VIP route at the router again")
    finally:
        await speaker.stop()

    # stop: the files go, the router loses the session (BIRD's Cease on SIGTERM)
    assert not speaker.running and events[-1].kind == "stopped"
    assert not os.path.exists(speaker.pid_path) and not os.path.exists(speaker.socket_path)
    detail = await router_session(router_ctl)
    assert not detail.established and "Administrative shutdown" in detail.last_error
    assert await router_routes(router_ctl) == []
    assert (await speaker.sessions())[0].info == "BIRD is not running"
    await speaker.stop()  # idempotent


async def test_refused_config_starts_nothing(tmp_path):
    run_dir = str(tmp_path / "run")
    speaker = BirdSpeaker(run_dir, "protocol bgp { neighbor ; }\n", pdeathsig=False)
    with pytest.raises(BirdConfigError, match=r"bird\.conf\.new:1:27 Local AS number must be set") as refused:
        await speaker.start()
    assert len(refused.value.lines) <= 10 and all(len(line) <= 300 for line in refused.value.lines)
    assert not speaker.running
    assert os.listdir(run_dir) == []  # neither bird.conf nor the refused candidate


async def test_run_dir_must_be_a_real_directory(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(SpeakerError, match="symbolic link"):
        await BirdSpeaker(str(link), "router id 10.0.0.1;\n").start()
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(SpeakerError, match="not a directory"):
        await BirdSpeaker(str(plain), "router id 10.0.0.1;\n").start()
    assert list(target.iterdir()) == []


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_bird_dies_with_directord(tmp_path):
    """PR_SET_PDEATHSIG: a directord killed with SIGKILL takes its BIRD with it."""
    ns = f"{PREFIX}-p"
    N.cleanup_netns(PREFIX)
    N.create_netns(ns)
    script = textwrap.dedent(
        f"""\
        import asyncio, sys
        sys.path.insert(0, {os.getcwd()!r})
        from ha.bgp.speaker import BirdSpeaker
        async def main():
            s = BirdSpeaker({str(tmp_path / "run")!r}, "router id 10.0.0.1;\\nprotocol device {{}}\\n",
                            command_prefix=("ip", "netns", "exec", {ns!r}))
            await s.start()
            print(s.pid, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), line
        bird = int(line)
        assert alive(bird)
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 3
        while alive(bird) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(bird), "BIRD outlived its parent"
    finally:
        parent.kill()
        parent.wait(5)
        N.cleanup_netns(PREFIX)


async def test_restarts_back_off_until_bird_starts_again(tmp_path):
    """Failed restarts double the delay up to the maximum; a BIRD that stayed up
    ``backoff_reset`` seconds is restarted after the first delay again.

    BIRD is run through a script that execs the real BIRD unless a marker file exists."""
    ns = f"{PREFIX}-q"
    N.cleanup_netns(PREFIX)
    N.create_netns(ns)
    marker = tmp_path / "fail"
    wrapper = tmp_path / "bird"
    wrapper.write_text(f'#!/bin/sh\n[ -e {marker} ] && {{ echo "no BIRD today" >&2; exit 3; }}\nexec {BIRD} "$@"\n')
    wrapper.chmod(0o755)
    events: list[tuple[float, SpeakerEvent]] = []
    speaker = BirdSpeaker(
        str(tmp_path / "run"),
        "router id 10.0.0.1;\nprotocol device {}\n",
        binary=str(wrapper),
        command_prefix=("ip", "netns", "exec", ns),
        on_event=lambda e: events.append((time.monotonic(), e)),
        backoff_initial=0.1,
        backoff_max=0.8,
        backoff_reset=1.0,
    )
    try:
        await speaker.start()
        marker.write_text("")
        os.kill(speaker.pid, signal.SIGKILL)

        async def failures(n):
            return sum(e.kind == "restart_failed" for _, e in events) >= n

        await wait_for(lambda: failures(3), 5, "three failed restarts")
        marker.unlink()

        async def restarted():
            return speaker.restarts == 1 and speaker.running

        await wait_for(restarted, 5, "restart")
        kinds = [e.kind for _, e in events]
        assert kinds[:2] == ["started", "exited"] and kinds[-1] == "restarted"
        failed = [e.detail for _, e in events if e.kind == "restart_failed"]
        assert "exit code 3" in failed[0] and "no BIRD today" in failed[0]
        assert [d.rsplit("next attempt in ", 1)[1] for d in failed[:3]] == ["0.2 s", "0.4 s", "0.8 s"]
        # the delays were waited: 0.1 s before the first attempt, then 0.2 s, 0.4 s
        times = [t for t, e in events if e.kind in ("exited", "restart_failed")]
        gaps = [b - a for a, b in zip(times, times[1:])][:3]
        assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps
        assert await speaker.sessions() == []  # BIRD answers; it has no BGP protocol

        # up for longer than backoff_reset: the next restart comes after 0.1 s, not 0.8 s
        await asyncio.sleep(1.1)
        os.kill(speaker.pid, signal.SIGKILL)

        async def restarted_again():
            return speaker.restarts == 2 and speaker.running

        await wait_for(restarted_again, 5, "second restart", step=0.02)
        (t_exit, exited), (t_restart, again) = events[-2:]
        assert (exited.kind, again.kind) == ("exited", "restarted")
        assert 0.1 <= t_restart - t_exit < 0.6, t_restart - t_exit
    finally:
        await speaker.stop()
        N.cleanup_netns(PREFIX)


async def test_missing_binary_is_a_speaker_error(tmp_path):
    speaker = BirdSpeaker(
        str(tmp_path / "run"), "router id 10.0.0.1;\n", binary=str(tmp_path / "no-bird"), pdeathsig=False
    )
    with pytest.raises(SpeakerError, match=r"cannot run .*no-bird: \[Errno 2\]"):
        await speaker.start()
    assert not speaker.running


@pytest.mark.parametrize("sink", [False, True], ids=["no-sink", "sink"])
async def test_events_are_logged_at_debug_when_a_sink_reports_them(tmp_path, caplog, sink):
    """Without ``on_event`` the speaker logs its events at INFO; with one (the service turns
    them into ``bgp.speaker`` events, which the event log writes), at DEBUG, so that one fact
    is not logged twice."""
    ns = f"{PREFIX}-l"
    N.cleanup_netns(PREFIX)
    N.create_netns(ns)
    events: list[SpeakerEvent] = []
    speaker = BirdSpeaker(
        str(tmp_path / "run"),
        "router id 10.0.0.1;\nprotocol device {}\n",
        command_prefix=("ip", "netns", "exec", ns),
        on_event=events.append if sink else None,
    )
    caplog.set_level(logging.DEBUG, logger="directord.bgp")
    try:
        await speaker.start()
        pid = speaker.pid
    finally:
        await speaker.stop()
        N.cleanup_netns(PREFIX)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "directord.bgp"]
    level = logging.DEBUG if sink else logging.INFO
    assert (level, f"BIRD started: pid {pid}") in lines
    assert (level, "BIRD stopped: exit code 0") in lines
    assert [m for lv, m in lines if m.startswith(("BIRD started", "BIRD stopped")) and lv != level] == []
    assert [e.kind for e in events] == (["started", "stopped"] if sink else [])
