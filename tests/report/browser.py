"""Test support: headless Chromium driven over the DevTools protocol, on a pipe.

``--remote-debugging-pipe`` makes Chromium read NUL-terminated JSON commands from fd 3 and write
replies and events to fd 4: no websocket, no port. Console messages and uncaught exceptions arrive as
typed events (Runtime.consoleAPICalled with its level, Runtime.exceptionThrown, Log.entryAdded), which
is sturdier than grepping a log. Screenshots come back as PNG.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends are numbered 10 or more (close-on-exec), so that placing them at 3 and 4 in
    the child cannot overwrite one with the other."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


def find_browser() -> str | None:
    """A Chromium-family executable: $DSP3D_BROWSER, else the first of BROWSERS on the PATH."""
    chosen = os.environ.get("DSP3D_BROWSER")
    if chosen:
        return shutil.which(chosen) or (chosen if os.path.isfile(chosen) else None)
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageProblem:
    """A console error, a failed assertion or an uncaught exception reported by the page."""

    kind: str
    text: str


@dataclass
class Browser:
    """One headless browser with one page (a flattened DevTools session)."""

    executable: str
    width: int = 1280
    height: int = 900
    process: subprocess.Popen | None = None
    session: str = ""
    problems: list[PageProblem] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    _next_id: int = 0
    _buffer: bytes = b""

    def __enter__(self) -> Browser:
        self._profile = tempfile.TemporaryDirectory(prefix="dsp3d-chromium-")
        to_browser_r, self._to_browser = _high_pipe()
        self._from_browser, from_browser_w = _high_pipe()

        args = [
            self.executable,
            "--headless",
            "--no-sandbox",  # CI containers run as root, where Chromium's sandbox cannot start
            "--disable-gpu",
            # WebGL on the CPU (SwiftShader): headless machines have no GPU.
            "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--mute-audio",
            f"--user-data-dir={self._profile.name}",
            f"--window-size={self.width},{self.height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]

        def pipe_fds() -> None:  # in the child, before exec: the browser expects fds 3 and 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        log = os.environ.get("DSP3D_BROWSER_LOG")  # where to keep the browser's own log, when debugging
        with open(log or os.devnull, "ab") as stderr:
            # close_fds=False: closing would also close 3 and 4; every other descriptor of this
            # process is non-inheritable (Python's default) and is closed by exec anyway.
            self.process = subprocess.Popen(
                args,
                preexec_fn=pipe_fds,
                close_fds=False,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        os.close(to_browser_r)
        os.close(from_browser_w)
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, session=False
        )["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.process and self.process.poll() is None:
                try:
                    self._send({"id": self._new_id(), "method": "Browser.close"})
                    self.process.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    self.process.kill()
                    self.process.wait(timeout=10)
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._profile.cleanup()

    # ---- protocol ----------------------------------------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _send(self, message: dict) -> None:
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the browser in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise ConnectionError("the browser closed its DevTools pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _event(self, message: dict) -> None:
        self.events.append(message)
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.problems.append(PageProblem("exception", text))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.problems.append(PageProblem(f"console.{params['type']}", text))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.problems.append(PageProblem(f"log ({entry.get('source')})", entry.get("text", "")))

    def call(
        self, method: str, params: dict | None = None, session: bool = True, timeout: float = 60.0
    ) -> dict:
        """Send a command and return its result, recording the events that arrive meanwhile."""
        message = {"id": self._new_id(), "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self._send(message)
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._event(reply)

    def wait_for_event(self, method: str, timeout: float = 60.0) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline)
            if "method" in message:
                self._event(message)
                if message["method"] == method:
                    return message

    # ---- page ------------------------------------------------------------------------------------
    def open(self, url: str, timeout: float = 60.0) -> None:
        self.events.clear()
        self.call("Page.navigate", {"url": url})
        self.wait_for_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str, timeout: float = 60.0):
        """The value of a JavaScript expression (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 60.0, interval: float = 0.1):
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout:.0f} s: {expression}")
            time.sleep(interval)

    def screenshot(self, selector: str | None = None) -> bytes:
        """PNG of the viewport, or of one element's box."""
        params: dict = {"format": "png"}
        if selector is not None:
            box = self.evaluate(
                f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                " return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; })()"
            )
            params["clip"] = {"x": box[0], "y": box[1], "width": box[2], "height": box[3], "scale": 1}
            params["captureBeyondViewport"] = True
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])
