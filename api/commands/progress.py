"""Showing a stream of progress events ({"status", "digest"?, "total"?, "completed"?}) from pull, push and create:
a tqdm bar per layer (size, speed, time left) and one line per other status, all on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from tqdm import tqdm

from api.commands.display import human_bytes


def byte_bar(desc: str, total: int | None, initial: int = 0, out: TextIO | None = None) -> tqdm:
    """A bar counting bytes in decimal units, as Ollama's sizes are. Off a terminal, where redrawn bars would be
    noise, it prints one plain line instead ("pulling 6a0746a1ec1a (4.7 GB)")."""
    out = out or sys.stderr
    bar = tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1000, file=out,
               dynamic_ncols=True, leave=True, mininterval=0.2, disable=not out.isatty())
    if bar.disable:
        print(f"{desc} ({human_bytes(total)})" if total else desc, file=out, flush=True)
    return bar


class Progress:
    """Renders events as they arrive. A bar is named by its event's status ("pulling 6a0746a1ec1a"), or by
    ``verb`` and the digest when the event has none."""

    def __init__(self, verb: str, out: TextIO | None = None) -> None:
        self.verb = verb
        self.out = out or sys.stderr
        self.bars: dict[str, tqdm] = {}
        self.status = ""

    def update(self, event: dict) -> None:
        digest, total = event.get("digest"), event.get("total")
        if digest and total:
            self._bar(digest, event.get("status") or "", int(total), int(event.get("completed") or 0))
            return
        status = str(event.get("status", ""))
        if status and status != self.status:
            self._close_bars()
            self.status = status
            print(status, file=self.out, flush=True)

    def _bar(self, digest: str, status: str, total: int, completed: int) -> None:
        bar = self.bars.get(digest)
        if bar is None:
            desc = status or f"{self.verb} {digest.removeprefix('sha256:')[:12]}"
            bar = self.bars[digest] = byte_bar(desc, total, completed, self.out)
        bar.total = max(bar.total or 0, total)
        bar.update(max(0, completed - bar.n))

    def _close_bars(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def close(self) -> None:
        self._close_bars()


def show_progress(events: Iterable[dict], verb: str) -> dict:
    """Render every event; return the last one. Bars and stream are closed however it ends (Ctrl-C included),
    which is what tells the server to stop."""
    progress, last = Progress(verb), {}
    try:
        for last in events:
            progress.update(last)
    finally:
        progress.close()
        close = getattr(events, "close", None)
        if close:
            close()
    return last
