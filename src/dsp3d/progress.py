"""Progress of long loops: a status line redrawn in place on a terminal, plain lines everywhere else.

Every long-running function takes a ``progress(message)`` callback and prints lines through it. The
command line passes a ``Console``: called with a message it prints the message as a line; its
``status(text)`` redraws one status line in place (carriage return, at most every 0.1 s) when its stream
is a terminal, and does nothing when it is not (a log file, CI, nohup), where the loops print a plain line
per logging interval instead. Loops reach the status line through ``status(progress, text)`` and
``is_live(progress)``, which also accept any plain callable (``print``, a test's ``list.append``): for
those there is no status line, only lines.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

CLEAR_LINE = "\r\x1b[K"  # carriage return, then erase to the end of the line


def is_live(progress: Callable[[str], None]) -> bool:
    """True when ``progress`` draws a status line (a Console on a terminal)."""
    return bool(getattr(progress, "live", False))


def status(progress: Callable[[str], None], text: str, force: bool = False) -> None:
    """Redraw the status line of ``progress`` (throttled unless ``force``); nothing for plain callbacks."""
    if is_live(progress):
        progress.status(text, force)


def finish(progress: Callable[[str], None]) -> None:
    """Keep the status line of ``progress`` on screen as an ordinary line (the end of a loop)."""
    if is_live(progress):
        progress.finish()


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``?`` when unknown."""
    if seconds is None or not seconds == seconds or seconds == float("inf"):
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


def bar(done: int, total: int, width: int = 24) -> str:
    """``[#########---------------]  37%`` for ``done`` of ``total``."""
    fraction = min(1.0, done / total) if total else 1.0
    filled = int(round(width * fraction))
    return f"[{'#' * filled}{'-' * (width - filled)}] {100 * fraction:3.0f}%"


def timing(elapsed: float, eta: float | None, finished: bool) -> str:
    """``12s elapsed, ETA 1m30s`` (``12s`` alone once finished)."""
    if finished:
        return format_duration(elapsed)
    return f"{format_duration(elapsed)} elapsed, ETA {format_duration(eta)}"


class ProgressBar:
    """``done / total`` with rate and ETA: on a live Console a status line redrawn on every update; else a
    line at most every ``interval`` seconds. The last update (``done == total``) always prints a line."""

    def __init__(
        self,
        total: int,
        label: str,
        progress: Callable[[str], None],
        interval: float = 2.0,
        unit: str | None = None,
    ):
        self.total, self.label, self.progress, self.interval = total, label, progress, interval
        self.unit = label if unit is None else unit
        self.done = 0
        self.start = time.perf_counter()
        self.last = -float("inf")

    def text(self, now: float, note: str = "") -> str:
        elapsed = now - self.start
        finished = self.done >= self.total
        rate = f"  {format_count(self.done / elapsed)} {self.unit}/s" if elapsed > 0 and self.done else ""
        when = timing(elapsed, eta_seconds(self.done, self.total, elapsed), finished)
        suffix = f"  {note}" if note else ""
        count = f"{self.done:,}/{self.total:,}"
        return f"  {self.label} {bar(self.done, self.total)} {count}{rate}  {when}{suffix}"

    def update(self, amount: int = 1, note: str = "") -> None:
        self.done += amount
        now = time.perf_counter()
        if self.done >= self.total:
            self.progress(self.text(now, note))
        elif is_live(self.progress):
            status(self.progress, self.text(now, note))
        elif now - self.last >= self.interval:
            self.last = now
            self.progress(self.text(now, note))


def training_line(
    mode: str,
    step: int,
    total: int,
    terms: dict[str, float],
    lr: float,
    points_per_s: float,
    elapsed: float,
) -> str:
    """A training step's line: step, loss and its non-zero terms, lr, points/s, elapsed time and ETA.

    terms: mean loss terms since the last line, ``loss`` (or ``total``) and ``seg``, ``cross_reg``,
    ``seg_intra``, ``self_reg`` (absent or 0 where the stage does not train them).
    """
    loss = terms.get("loss", terms.get("total", float("nan")))
    extra = "".join(
        f" {name} {terms[name]:.3f}" for name in ("cross_reg", "seg_intra", "self_reg") if terms.get(name)
    )
    when = timing(elapsed, eta_seconds(step, total, elapsed), step >= total)
    return (
        f"  [{mode}] step {step}/{total}  loss {loss:.3f} (seg {terms.get('seg', float('nan')):.3f}{extra})"
        f"  lr {lr:.2e}  {points_per_s:,.0f} pts/s  {when}"
    )


class Console:
    """The command line's progress callback (see the module docstring).

    stream: where lines go (default stdout). live: draw a status line (default: when the stream is a
    terminal and TERM is not ``dumb``). quiet: print nothing at all (``dsp3d --quiet``: results and
    errors are printed by the command line itself).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        live: bool | None = None,
        quiet: bool = False,
        interval: float = 0.1,
    ):
        self.stream = sys.stdout if stream is None else stream
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
        self.quiet = quiet
        self.live = live and not quiet
        self.interval = interval
        self.shown = ""  # the status line on screen, "" when none
        self.last = -float("inf")

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        self._erase()
        self.stream.write(message + "\n")
        self.stream.flush()

    def status(self, text: str, force: bool = False) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        width = shutil.get_terminal_size((100, 24)).columns - 1
        text = text.replace("\n", " ")
        if len(text) > width:
            text = text[: max(0, width - 3)] + "..."
        self.stream.write(CLEAR_LINE + text)
        self.stream.flush()
        self.shown = text

    def finish(self) -> None:
        """The status line stays, the next output starts below it."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = ""

    def _erase(self) -> None:
        if self.shown:
            self.stream.write(CLEAR_LINE)
            self.shown = ""
