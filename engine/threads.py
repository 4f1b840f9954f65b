"""Choosing how many kernel threads to use by measuring, not guessing.

On an idle 2-core machine two threads decode faster; with another busy process on it, two threads wait on each
other at every barrier and one thread is three times faster (benchmarks/speed.py measured 92 → 26 tok/s for
two threads, 74 → 74 for one). The tuner keeps the fastest count and re-tries the others now and then, so it follows
the machine's load as it changes.
"""

from __future__ import annotations

import numba
from numba.np.ufunc import parallel

EXPLORE_EVERY = 64      # decode steps between trials of the other thread counts
TRIAL_STEPS = 4         # steps per trial
SMOOTHING = 0.3         # weight of a new measurement in the running mean


class ThreadTuner:
    """Per-token step time for each candidate thread count; ``pick`` returns the count for the next step."""

    def __init__(self, candidates: list[int] | None = None) -> None:
        self.candidates = candidates or list(range(1, numba.config.NUMBA_NUM_THREADS + 1))
        self.seconds_per_token: dict[int, float] = {}
        self.best = self.candidates[-1]
        self._steps = 0
        self._trial: list[int] = []

    def pick(self) -> int:
        if not self._trial and self._steps % EXPLORE_EVERY == 0:
            self._trial = [n for n in self.candidates for _ in range(TRIAL_STEPS)]
        return self._trial[0] if self._trial else self.best

    def record(self, threads: int, tokens: int, seconds: float) -> None:
        """A decode step of ``tokens`` tokens ran on ``threads`` threads in ``seconds``."""
        self._steps += 1
        if self._trial and self._trial[0] == threads:
            self._trial.pop(0)
        per_token = seconds / max(1, tokens)
        old = self.seconds_per_token.get(threads)
        self.seconds_per_token[threads] = per_token if old is None else old + SMOOTHING * (per_token - old)
        self.best = min(self.seconds_per_token, key=self.seconds_per_token.__getitem__)


_threads_now = None      # numba's own reader of this thread's count, once its threading layer is up


def kernel_threads() -> int:
    """numba.get_num_threads() for this thread, without the initialization check it repeats under two locks on
    every call (0.73 -> 0.12 µs; a decoded token asks ~150 times). The first call goes through the public one."""
    global _threads_now
    if _threads_now is not None:
        return _threads_now()
    threads = numba.get_num_threads()                 # launches the threading layer if nothing has yet
    _threads_now = getattr(parallel, "_get_num_threads", None)
    return threads
