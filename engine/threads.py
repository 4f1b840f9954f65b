"""Choosing how many kernel threads to use by measuring, not guessing.

On an idle 2-core machine two threads decode faster; with another busy process on it, two threads wait on each
other at every barrier and one thread is three times faster (benchmarks/speed.py measured 92 → 26 tok/s for
two threads, 74 → 74 for one). The tuner keeps the fastest count and re-tries the others now and then, so it follows
the machine's load as it changes. A trial of the slower count costs its steps' extra time, so trials that keep
confirming the same count come less and less often (every 64 decode steps at first, at most every 1024: 4 one-thread
steps every 64 had cost ~4 % of two-thread decode), and a sustained change of the chosen count's own step time (the
machine's load changed) brings the next trial forward at once. Runners keep one tuner per batch size class
(BatchTuners): a step's time per token depends on how many sequences share it.
"""

from __future__ import annotations

import numba
from numba.np.ufunc import parallel

EXPLORE_FIRST = 64      # decode steps until the next trial after the best count changed (or the load did)
EXPLORE_LAST = 1024     # the longest wait between trials, reached by doubling while trials confirm the best count
TRIAL_STEPS = 4         # steps per trial of each count
SMOOTHING = 0.3         # weight of a new measurement in the running mean
DRIFT = 1.5             # a step of the best count this much slower (or faster) than at the last trial...
DRIFT_STEPS = 3         # ...this many steps in a row: the load changed, so trial again now


class ThreadTuner:
    """Per-token step time for each candidate thread count; ``pick`` returns the count for the next step."""

    def __init__(self, candidates: list[int] | None = None) -> None:
        self.candidates = candidates or list(range(1, numba.config.NUMBA_NUM_THREADS + 1))
        self.seconds_per_token: dict[int, float] = {}
        self.best = self.candidates[-1]
        self.interval = EXPLORE_FIRST
        self._steps = 0
        self._next_trial = 0
        self._drifting = 0
        self._trial: list[int] = []
        self._best_before_trial, self._tried = self.best, set()
        self._reference: float | None = None     # the best count's time per token when the last trial ended

    def pick(self) -> int:
        if not self._trial and self._steps >= self._next_trial:
            self._trial = [n for n in self.candidates for _ in range(TRIAL_STEPS)]
            self._best_before_trial, self._tried = self.best, set()
        return self._trial[0] if self._trial else self.best

    def record(self, threads: int, tokens: int, seconds: float) -> None:
        """A decode step of ``tokens`` tokens ran on ``threads`` threads in ``seconds``."""
        self._steps += 1
        per_token = seconds / max(1, tokens)
        old = self.seconds_per_token.get(threads)
        in_trial = bool(self._trial) and self._trial[0] == threads
        if in_trial and threads not in self._tried:     # a trial starts afresh: the old mean may be long stale
            self._tried.add(threads)
            old = None
        elif not in_trial and self._reference is not None:
            self._watch_drift(per_token / self._reference)
        self.seconds_per_token[threads] = per_token if old is None else old + SMOOTHING * (per_token - old)
        best, self.best = self.best, min(self.seconds_per_token, key=self.seconds_per_token.__getitem__)
        if not in_trial and self.best != best:        # the load changed under the best count: look again soon
            self._trial_soon(EXPLORE_FIRST)
        if in_trial:
            self._trial.pop(0)
            if not self._trial:               # trials that keep confirming the best count come less often
                confirmed = self.best == self._best_before_trial
                self.interval = min(2 * self.interval, EXPLORE_LAST) if confirmed else EXPLORE_FIRST
                self._next_trial = self._steps + self.interval
                self._reference = self.seconds_per_token[self.best]

    def _watch_drift(self, ratio: float) -> None:
        self._drifting = self._drifting + 1 if not 1 / DRIFT < ratio < DRIFT else 0
        if self._drifting >= DRIFT_STEPS:
            self._trial_soon(0)

    def _trial_soon(self, steps: int) -> None:
        self._drifting, self.interval, self._next_trial = 0, EXPLORE_FIRST, self._steps + steps
        self._reference = self.seconds_per_token[self.best]


class BatchTuners:
    """A ThreadTuner per batch size class (1, 2, 3-4, 5-8, ... sequences a step). The time per token falls as
    sequences join a step, so one tuner for all took every change of the batch for a change of the machine's load
    and tried the slower count again (8 streams through HTTP: ~5 % slower than a fixed count)."""

    def __init__(self, candidates: list[int] | None = None) -> None:
        self._candidates = candidates
        self._tuners: dict[int, ThreadTuner] = {}

    def for_batch(self, sequences: int) -> ThreadTuner:
        size_class = (max(1, sequences) - 1).bit_length()
        if size_class not in self._tuners:
            self._tuners[size_class] = ThreadTuner(self._candidates)
        return self._tuners[size_class]

    @property
    def best(self) -> int:
        """The best count for one sequence (what calls between steps, such as embeddings, run at)."""
        return self.for_batch(1).best


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
