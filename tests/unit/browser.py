"""A real headless Chromium (Debian's ``chromium`` package), driven over the DevTools protocol.

`Browser` starts ``chromium --headless --remote-debugging-pipe`` (optionally inside a network
namespace, so it reaches that namespace's loopback) and speaks the Chrome DevTools Protocol
over the pipe: messages are JSON objects, each followed by a NUL byte, written to the
browser's fd 3 and read from its fd 4. `Browser.open` creates a page target and attaches to
it (flattened session); `Page.evaluate` runs JavaScript in the page and returns the value;
`Page.screenshot` saves a PNG.

Times are seconds.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_problem() -> str | None:
    """None when a headless Chromium can be started here, else why not."""
    if CHROMIUM is None:
        return "chromium (Debian package chromium) is not installed"
    return None


class Browser:
    """One headless Chromium process; use as a context manager.

    Args:
        netns: run it inside this named network namespace (``ip netns exec``), or None.
        size: the window size in CSS pixels (width, height).
    """

    def __init__(self, netns: str | None = None, size: tuple[int, int] = (412, 915)) -> None:
        assert CHROMIUM is not None
        self._profile = tempfile.mkdtemp(prefix="directord-chromium-")
        argv = [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",  # root in a test: the sandbox refuses to run as root
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={self._profile}",
            f"--window-size={size[0]},{size[1]}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the browser reads commands on fd 3 and writes answers on fd 4: the child's fds 3 and 4
        # are set by the preexec function, which runs before the other fds are closed
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=_pipes_to_3_and_4(to_browser_r, from_browser_w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the browser and remove its profile."""
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 30
    ) -> dict:
        """One DevTools command; its ``result``.

        Raises:
            RuntimeError: the browser answered with an error.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for answer in self._read(deadline):
                if answer.get("id") == self._next_id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer.get("result", {})
                self._events.append(answer)

    def _read(self, deadline: float) -> list[dict[str, Any]]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer from the browser")
        ready, _, _ = select.select([self._from_browser], [], [], left)
        if not ready:
            raise TimeoutError("no answer from the browser")
        data = os.read(self._from_browser, 1 << 20)
        if not data:
            raise OSError("the browser closed its pipe")
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\0")
        return [json.loads(part) for part in complete if part]

    def open(self, url: str) -> Page:
        """A new page (tab) loading ``url``."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.send("Page.navigate", {"url": url})
        return page


class Page:
    """One page of a `Browser`, attached as a flattened DevTools session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of the JavaScript ``expression`` in the page (JSON-serialisable values).

        Raises:
            RuntimeError: the expression threw.
        """
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, interval: float = 0.2) -> Any:
        """Evaluate ``expression`` until it is truthy; its value.

        Raises:
            TimeoutError: still falsy after ``timeout`` seconds (its last value in the message).
        """
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"{expression!r} stayed {value!r} for {timeout} s")

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page at ``path``."""
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path


def _pipes_to_3_and_4(read_end: int, write_end: int):
    """A preexec_fn giving the child ``read_end`` as fd 3 and ``write_end`` as fd 4."""

    def move() -> None:
        r, w = os.dup(read_end), os.dup(write_end)
        os.dup2(r, 3)
        os.dup2(w, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    return move
