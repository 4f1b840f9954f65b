"""Text as Ollama's CLI prints it: human sizes and times, Go durations, left-aligned tables, a spinner."""

from __future__ import annotations

import itertools
import math
import sys
import threading
from datetime import UTC, datetime
from typing import TextIO

KB, MB, GB, TB = 1000, 1000**2, 1000**3, 1000**4
TABLE_GAP = "    "        # between table columns, as Ollama's tablewriter padding
FOREVER_YEARS = 20        # an expiry further out than this is "Forever" (keep_alive < 0)


def human_bytes(n: int) -> str:
    """Ollama's format.HumanBytes: decimal units, a decimal place only below 10 ("98 MB", "1.5 GB", "512 B")."""
    for limit, unit in ((TB, "TB"), (GB, "GB"), (MB, "MB"), (KB, "KB")):
        if n >= limit:
            value = n / limit
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{n} B"


def human_number(n: int) -> str:
    """Ollama's format.HumanNumber, used for parameter counts ("134.52M", "8B", "1.2B")."""
    for limit, suffix, places in ((1e9, "B", 1), (1e6, "M", 2)):
        if n >= limit:
            value = n / limit
            return f"{value:.0f}{suffix}" if value == math.floor(value) else f"{value:.{places}f}{suffix}"
    return f"{n / 1e3:.0f}K" if n >= 1e3 else str(n)


def _human_duration(seconds: float) -> str:
    """Ollama's humanDuration: "Less than a second", "About a minute", "3 hours", "2 weeks"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return "1 second" if s == 1 else f"{s} seconds"
    minutes = s // 60
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    hours = round(seconds / 3600)
    for limit, divisor, unit in ((48, 1, "hours"), (24 * 14, 24, "days"), (24 * 60, 24 * 7, "weeks"),
                                 (24 * 730, 24 * 30, "months")):
        if hours < limit:
            return "About an hour" if hours == 1 else f"{hours // divisor} {unit}"
    return f"{hours // (24 * 365)} years"


def human_time(when: datetime | None, zero: str = "Never", now: datetime | None = None) -> str:
    """Ollama's format.HumanTime: "2 minutes ago", "4 minutes from now", "Forever" for a far-future time."""
    if when is None:
        return zero
    delta = ((now or datetime.now(UTC)) - when).total_seconds()
    if delta / 86400 / 365 < -FOREVER_YEARS:
        return "Forever"
    if delta < 0:
        return _human_duration(-delta) + " from now"
    return _human_duration(delta) + " ago"


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp (Go's nanosecond fractions included); None when absent, zero or unreadable."""
    if not text or text.startswith("0001-01-01"):
        return None
    head, dot, rest = text.partition(".")
    if dot:       # keep at most microseconds: fromisoformat refuses longer fractions
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)].ljust(6, '0')}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(): "1.234567891s", "2m3.5s", "12.5ms", "800µs", "0s"."""
    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim(ns, size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return sign + text + _trim(rest, 1_000_000_000) + "s"


def _trim(value: int, size: int) -> str:
    whole, frac = divmod(value, size)
    digits = len(str(size)) - 1
    fraction = f"{frac:0{digits}d}".rstrip("0") if digits else ""
    return f"{whole}.{fraction}" if fraction else str(whole)


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by TABLE_GAP, trailing spaces dropped (Ollama's list/ps layout)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [TABLE_GAP.join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines) + "\n"


class Spinner:
    """A braille spinner on a terminal while we wait (model loading, first token); silent when not a TTY."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, message: str = "", out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.message = message
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Spinner:
        if self.out.isatty():
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def _spin(self) -> None:
        for frame in itertools.cycle(self.FRAMES):
            self.out.write(f"\r{self.message} {frame} " if self.message else f"\r{frame} ")
            self.out.flush()
            if self._stop.wait(0.1):
                return

    def stop(self) -> None:
        """Stop and erase the spinner line; safe to call more than once."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.out.write("\r\x1b[K")
        self.out.flush()
