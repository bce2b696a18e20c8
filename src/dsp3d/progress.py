"""Messages and the progress of long loops.

Messages go through Python's logging (logger ``dsp3d``). Long loops report through ``task()``: a context
manager whose ``Task.update()`` advances a bar or replaces a status line's fields. What the user sees is
set up once per process by ``setup()`` (the command line calls it):

- on a terminal, a rich live display keeps one line per running task at the bottom of the screen and
  prints log records above it, so messages and status lines never collide. Each line is rebuilt for the
  terminal's width at every refresh, dropping its least useful fields first (``Field.keep``: the lowest
  goes first), so the step and the ETA survive in an 80-column pane;
- elsewhere (a file, CI, nohup) there is no live display: a task logs its line as a plain record every
  ``PLAIN_INTERVAL_S`` seconds and when it ends.

Without ``setup()`` (the Python API, tests) records go wherever logging sends them and tasks behave as
in the second case. rich is used for the terminal because it owns the cursor: a hand-written
carriage-return line was overwritten by warnings and cut at the width before its most useful part.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.text import Text

log = logging.getLogger("dsp3d")
PLAIN_INTERVAL_S = 30.0  # off a terminal (logs, CI): a task's line at most this often
REFRESH_PER_S = 4


@dataclass(frozen=True)
class Field:
    """One part of a status line. keep: how useful it is (fields with the lowest keep are dropped first
    when the line does not fit)."""

    text: str
    keep: int = 5


def fit(fields: list[Field], width: int) -> str:
    """The fields, in their order, joined by two spaces; the least useful ones dropped until the line
    fits ``width`` characters (the most useful one is cut with "..." if it alone is too long)."""
    kept = list(fields)
    while len(kept) > 1 and len(_join(kept)) > width:
        kept.remove(min(kept, key=lambda f: f.keep))
    line = _join(kept)
    return line if len(line) <= width else line[: max(0, width - 3)] + "..."


def _join(fields: list[Field]) -> str:
    return "  ".join(f.text for f in fields if f.text)


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_count(value: float) -> str:
    """``950``, ``12.3k``, ``4.56M``: a rate or a count in at most 4 significant characters."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale * 0.9995:  # what rounds to 1000 of the smaller unit takes this one
            scaled = value / scale
            return f"{scaled:.3g}{suffix}" if abs(scaled) < 999.5 else f"{scaled:.0f}{suffix}"
    return f"{value:.3g}" if abs(value) < 9.995 else f"{value:.0f}"


def eta_seconds(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left at the average speed so far; None before any progress."""
    if done <= 0 or elapsed <= 0:
        return None
    return max(0.0, elapsed / done * (total - done))


def bar(done: int, total: int, width: int = 20) -> str:
    """``[########------------]  37%`` for ``done`` of ``total``."""
    fraction = min(1.0, done / total) if total else 1.0
    filled = int(round(width * fraction))
    return f"[{'#' * filled}{'-' * (width - filled)}] {100 * fraction:3.0f}%"


@dataclass
class Task:
    """A running loop's state. With ``total``, ``update(advance)`` counts towards it and the line shows a
    bar, the count, the rate and the ETA; ``fields`` replace the line's own parts (the training line)."""

    description: str
    total: int | None = None
    unit: str = ""
    done: int = 0
    note: str = ""
    fields: list[Field] = field(default_factory=list)
    started: float = field(default_factory=lambda: time.perf_counter())
    last_plain: float = field(default_factory=lambda: time.perf_counter())

    def update(self, advance: int = 0, note: str | None = None, fields: list[Field] | None = None) -> None:
        self.done += advance
        if note is not None:
            self.note = note
        if fields is not None:
            self.fields = fields
        _display().updated(self)

    def line_fields(self) -> list[Field]:
        if self.fields:
            return self.fields
        elapsed = time.perf_counter() - self.started
        parts = [Field(self.description, 9)]
        if self.total:
            parts += [Field(bar(self.done, self.total), 3), Field(f"{self.done:,}/{self.total:,}", 6)]
            parts.append(Field(f"ETA {format_duration(eta_seconds(self.done, self.total, elapsed))}", 8))
        if elapsed > 0 and self.done:
            parts.append(Field(f"{format_count(self.done / elapsed)} {self.unit}/s".strip(), 2))
        parts.append(Field(format_duration(elapsed), 4))
        if self.note:
            parts.append(Field(self.note, 1))
        return parts

    def line(self, width: int = 10_000) -> str:
        return fit(self.line_fields(), width)


@contextlib.contextmanager
def task(description: str, total: int | None = None, unit: str = "") -> Iterator[Task]:
    """A loop's progress, shown while the block runs; off a terminal its last state is logged at the end
    when the loop ran long enough to have logged a line before (short loops stay silent)."""
    current = Task(description, total, unit)
    display = _display()
    display.started(current)
    try:
        yield current
    finally:
        display.ended(current)


class _Lines:
    """The live region: one fitted line per running task, for the width rich gives."""

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(20, options.max_width - 1)
        yield Group(*[Text(t.line(width), no_wrap=True, overflow="ellipsis") for t in self.tasks])


class _PlainDisplay:
    """No terminal: a task's line becomes a log record every PLAIN_INTERVAL_S seconds."""

    def started(self, task_: Task) -> None:
        task_.last_plain = time.perf_counter()

    def updated(self, task_: Task) -> None:
        now = time.perf_counter()
        if now - task_.last_plain >= PLAIN_INTERVAL_S:
            task_.last_plain = now
            log.info("  %s", task_.line())

    def ended(self, task_: Task) -> None:
        if time.perf_counter() - task_.started >= PLAIN_INTERVAL_S:
            log.info("  %s", task_.line())


class _LiveDisplay:
    """A terminal: the running tasks' lines at the bottom, redrawn REFRESH_PER_S times a second."""

    def __init__(self, console: Console):
        self.console = console
        self.tasks: list[Task] = []
        self.live = Live(
            _Lines(self.tasks), console=console, refresh_per_second=REFRESH_PER_S, transient=True
        )

    def started(self, task_: Task) -> None:
        self.tasks.append(task_)
        if not self.live.is_started:
            self.live.start()

    def updated(self, task_: Task) -> None:
        pass  # the live display redraws on its own clock

    def ended(self, task_: Task) -> None:
        if task_ in self.tasks:
            self.tasks.remove(task_)
        if not self.tasks and self.live.is_started:
            self.live.stop()
        if task_.total or task_.fields:  # the last state stays on screen as an ordinary line
            self.console.print(Text(task_.line(self.console.width - 1)), highlight=False)

    def stop(self) -> None:
        self.tasks.clear()
        if self.live.is_started:
            self.live.stop()


class _ConsoleHandler(logging.Handler):
    """Log records as plain lines (above the live region on a terminal): information on the display's
    console (stdout), warnings and errors on stderr, prefixed with their level."""

    def __init__(self, console: Console, errors: Console):
        super().__init__()
        self.console, self.errors = console, errors

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            console = self.console
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
                # While a live region is drawn, a write to the terminal's stderr would land on the end of
                # the status line (rich unwraps its own stderr proxy for a stderr console): print on the
                # live console, which clears the region, prints above it and redraws it.
                console = self.console if _live_running() else self.errors
            console.print(Text(message), highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


_current: _PlainDisplay | _LiveDisplay = _PlainDisplay()


def _display() -> _PlainDisplay | _LiveDisplay:
    return _current


def _live_running() -> bool:
    return isinstance(_current, _LiveDisplay) and _current.live.is_started


def is_live() -> bool:
    """Whether a live display draws the status lines (a terminal, after setup())."""
    return isinstance(_current, _LiveDisplay)


def setup(quiet: bool = False, live: bool | None = None, stream: TextIO | None = None) -> None:
    """Configure messages and progress for a command-line process.

    quiet: only warnings and errors (no info, no progress). live: a live display (default: when the
    stream is a terminal and TERM is not dumb). stream: where everything goes (default: stdout, and
    warnings and errors to stderr).
    """
    global _current
    if live is None:
        isatty = getattr(sys.stdout if stream is None else stream, "isatty", None)
        live = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
    live = live and not quiet
    # file=None: rich writes to whatever sys.stdout is at the time (a test's capture included)
    console = Console(file=stream, force_terminal=live or None, highlight=False, soft_wrap=True)
    teardown()
    _current = _LiveDisplay(console) if live else _PlainDisplay()
    logger = logging.getLogger("dsp3d")
    errors = console if stream is not None else Console(stderr=True, highlight=False, soft_wrap=True)
    logger.addHandler(_ConsoleHandler(console, errors))
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def shutdown() -> None:
    """End any live display (an error or Ctrl-C while a task runs: the cursor comes back)."""
    if isinstance(_current, _LiveDisplay):
        _current.stop()


def teardown() -> None:
    """Undo setup(): no live display, no console handler (the end of a command)."""
    global _current
    shutdown()
    _current = _PlainDisplay()
    logger = logging.getLogger("dsp3d")
    for handler in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
        logger.removeHandler(handler)
