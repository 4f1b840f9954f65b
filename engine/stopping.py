"""Stop strings, matched across token boundaries and never emitted.

Generated text arrives in pieces (one decoded token at a time), and a stop string can straddle pieces: with
stop "###", the pieces "a#", "#", "#b" must emit "a" and stop. ``StopMatcher`` releases text as soon as it
cannot be the start of a stop string, and holds back only the longest tail that still could be (Ollama's
runner does the same with its pending-text buffer).
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed decoded text with ``push``; it returns what is safe to emit now and whether a stop string ended.

    The stop string that *completes* first wins (for two ending at the same place, the longer), so the
    result does not depend on how the text was cut into pieces: the text before it is emitted, the stop
    string and anything after it are dropped. (Ollama takes the first stop in list order that the text
    contains, which can depend on token boundaries.) Empty stop strings are ignored.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""                     # tail of the text that may begin a stop string
        self.stopped = False

    def push(self, text: str) -> tuple[str, bool]:
        """Add ``text``; return (text safe to emit now, stopped?). After a stop, returns ("", True)."""
        if self.stopped:
            return "", True
        pending = self._held + text
        at = self._first_stop(pending)
        if at is not None:
            self._held, self.stopped = "", True
            return pending[:at], True
        keep = self._partial_stop_len(pending)
        self._held = pending[len(pending) - keep:]
        return pending[: len(pending) - keep], False

    def flush(self) -> str:
        """At the end of generation without a stop: release whatever was held back."""
        held, self._held = self._held, ""
        return held

    def _first_stop(self, text: str) -> int | None:
        """Start index of the stop string that ends first in ``text`` (the longer on a tie), or None."""
        found = [(i + len(s), i) for s in self.stops if (i := text.find(s)) >= 0]   # (end, start)
        return min(found)[1] if found else None

    def _partial_stop_len(self, text: str) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of some stop string."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
