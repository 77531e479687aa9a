"""The test's side of ``bgp_service_driver.py``: `Driver` runs the driver (and through it
`ha.bgp.service.BgpService`) in a network namespace and speaks to it one JSON line at a time,
for ``test_bgp_service.py`` and ``test_bgp_neighbours.py``.

The driver's lines are read by a thread of their own into a queue, so that every wait for an
answer ends when its timeout (seconds) expires, even when the driver writes nothing more.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

#: The driver script.
DRIVER = Path(__file__).resolve().parent / "bgp_service_driver.py"


class Driver:
    """The service in namespace ``ns`` (``bgp_service_driver.py``), started with ``config`` (the
    driver's JSON form of a `BgpConfig`) and state directory ``state_dir``; spoken to line by line.

    ``events`` holds every event line the driver wrote (``{"event": KIND, ...}``) among the
    lines read so far, in order. The constructor waits ``started`` seconds at most for the
    service to start; it raises AssertionError (the driver killed) when it does not."""

    def __init__(self, ns: str, config: dict, state_dir: Path, started: float = 20.0) -> None:
        self.events: list[dict] = []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(DRIVER), json.dumps(config), str(state_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.expect("started", started)
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        """Put each line of the driver's output in the queue, then "" at its end."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def expect(self, key: str, timeout: float = 15.0) -> dict:
        """The next line (a JSON object) that has ``key``, read within ``timeout`` seconds; the
        events read on the way are kept in ``events``. Raises AssertionError when the driver
        ends first or no such line comes in time."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if not line:
                raise AssertionError(f"the driver ended before {key!r}; events {self.events}")
            doc = json.loads(line)
            if "event" in doc:
                self.events.append(doc)
            if key in doc:
                return doc
        raise AssertionError(f"no {key!r} within {timeout} s")

    def write(self, cmd: dict) -> None:
        """Give the driver command ``cmd`` (see ``bgp_service_driver.py``) without waiting for its
        answer (`expect` it later). Raises BrokenPipeError when the driver has ended."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def send(self, cmd: dict, key: str = "ok") -> dict:
        """Give the driver ``cmd`` and return its answer, the next line with ``key`` (`expect`,
        its default timeout)."""
        self.write(cmd)
        return self.expect(key)

    def sessions(self) -> dict[str, tuple[str, str]]:
        """The service's `status` of each session: neighbour name -> (state, info)."""
        status = self.send({"do": "status"}, "status")["status"]
        return {s["neighbor"]: (s["state"], s["info"]) for s in status["sessions"]}

    def routes(self) -> list[dict]:
        """The ``bgp.route`` events read so far, in order."""
        return [e for e in self.events if e["event"] == "bgp.route"]

    def close(self) -> None:
        """Kill the driver if it still runs and reap it (10 s at most: TimeoutExpired after)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
