"""Progress of building the channel graph, for the shell: silent when quick, a status line when not."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class TraceProgress:
    """A `progress(done, total, where)` callback writing to stderr once tracing takes over `after_s`.

    On a terminal one line is rewritten in place; piped, a line is written every `every_s` seconds.
    """

    def __init__(self, stream: TextIO | None = None, after_s: float = 1.0, every_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.after_s, self.every_s = after_s, every_s
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int, where: str) -> None:
        now = time.monotonic()
        if where == "done":
            if self.shown and self.tty:
                self.stream.write("\r\033[K")
                self.stream.flush()
            self.start, self.shown = now, False  # the next trace (apply after plan) starts afresh
            return
        if now - self.start < self.after_s or (not self.tty and now - self.last < self.every_s):
            return
        self.last = now
        text = f"tracing channels: {done}/{total} modules, {now - self.start:.0f} s, in {where}"
        if self.tty:
            self.stream.write("\r\033[K" + text[:200])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = True
