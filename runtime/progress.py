"""Progress on stderr (no dependency; the runtime needs only numpy + onnxruntime).

On a terminal: a one-line bar redrawn in place. Elsewhere (a log file, a pipe, a CI job) a bar
drawn with carriage returns is noise, so a plain line is printed every LINE_EVERY seconds
instead, and a last one at the end if any was printed (a short run prints nothing).
"""

from __future__ import annotations

import sys
import time

LINE_EVERY = 10.0  # seconds between the plain lines written when stderr is not a terminal


class Progress:
    def __init__(self, total: int, desc: str = "", unit: str = "tok", enabled: bool = True, stream=None):
        self.total, self.desc, self.unit = max(int(total), 1), desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 0.2 if self.terminal else LINE_EVERY
        self.lines, self._drawn = 0, -1
        self.done = 0
        self.t0 = self._last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > self.every or (self.terminal and self.done >= self.total)):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0)
        rate = self.done / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        if not self.terminal:
            self.lines, self._drawn = self.lines + 1, self.done
            self.stream.write(
                f"{self.desc}: {100 * frac:5.1f}% ({self.done:,} of {self.total:,} {self.unit}), "
                f"{rate:,.0f} {self.unit}/s, eta {eta:.0f}s\n"
            )
            self.stream.flush()
            return
        bar = "#" * int(24 * frac)
        self.stream.write(f"\r{self.desc} [{bar:<24}] {100 * frac:5.1f}%  {rate:,.0f} {self.unit}/s  eta {eta:4.0f}s ")
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.terminal:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
        elif self.lines and self._drawn != self.done:
            self._draw(time.perf_counter())
