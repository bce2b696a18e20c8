"""Text progress for long loops, printed through the usual ``progress(message)`` callback.

Lines rather than a carriage-return bar: they read the same in a terminal, a log file and CI output.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def bar(done: int, total: int, width: int = 24) -> str:
    """``[#########---------------]  37%`` for ``done`` of ``total``."""
    fraction = done / total if total else 1.0
    filled = int(round(width * fraction))
    return f"[{'#' * filled}{'-' * (width - filled)}] {100 * fraction:3.0f}%"


class ProgressBar:
    """Reports ``done / total`` at most every ``interval`` seconds (and always at the end)."""

    def __init__(self, total: int, label: str, progress: Callable[[str], None], interval: float = 2.0):
        self.total, self.label, self.progress, self.interval = total, label, progress, interval
        self.done = 0
        self.start = time.perf_counter()
        self.last = -float("inf")

    def update(self, amount: int = 1, note: str = "") -> None:
        self.done += amount
        now = time.perf_counter()
        if self.done >= self.total or now - self.last >= self.interval:
            self.last = now
            elapsed = now - self.start
            eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            timing = f"{elapsed:.0f}s" + (f", ~{eta:.0f}s left" if self.done < self.total else "")
            suffix = f"  {note}" if note else ""
            self.progress(
                f"  {self.label} {bar(self.done, self.total)} {self.done}/{self.total} ({timing}){suffix}"
            )
