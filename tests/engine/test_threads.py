"""ThreadTuner: follows whichever thread count measures faster, and notices when that changes; kernel_threads."""

from __future__ import annotations

import threading

import numba

from engine.threads import (
    DRIFT_STEPS,
    EXPLORE_FIRST,
    EXPLORE_LAST,
    TRIAL_STEPS,
    BatchTuners,
    ThreadTuner,
    kernel_threads,
)


def drive(tuner: ThreadTuner, cost: dict[int, float], steps: int) -> list[int]:
    picks = []
    for _ in range(steps):
        n = tuner.pick()
        picks.append(n)
        tuner.record(n, 1, cost[n])
    return picks


def trials(picks: list[int]) -> list[int]:
    """The steps at which a trial of one thread began."""
    return [i for i, n in enumerate(picks) if n == 1 and (i == 0 or picks[i - 1] != 1)]


def settled() -> ThreadTuner:
    """A tuner that has run long enough on an idle machine for its trials to be as rare as they get."""
    tuner = ThreadTuner([1, 2])
    drive(tuner, IDLE, 8 * EXPLORE_LAST)
    assert tuner.best == 2 and tuner.interval == EXPLORE_LAST
    return tuner


IDLE = {1: 0.013, 2: 0.010}
BUSY = {1: 0.013, 2: 0.040}            # another process competes for a core: two threads wait on each other


def test_settles_on_the_faster_count_and_trials_it_less_and_less():
    tuner = ThreadTuner([1, 2])
    picks = drive(tuner, IDLE, 8 * EXPLORE_LAST)
    assert tuner.best == 2
    starts = trials(picks)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    waits = [gap - 2 * TRIAL_STEPS for gap in gaps]                   # a trial, then twice the wait each time
    assert waits[0] <= 2 * EXPLORE_FIRST and waits[-3:] == [EXPLORE_LAST] * 3
    assert all(b == min(2 * a, EXPLORE_LAST) for a, b in zip(waits, waits[1:], strict=False))
    assert all(picks[s:s + TRIAL_STEPS] == [1] * TRIAL_STEPS for s in starts)
    assert picks.count(1) < 0.01 * len(picks)


def test_moves_to_one_thread_at_once_when_the_machine_gets_busy():
    tuner = settled()
    picks = drive(tuner, BUSY, EXPLORE_FIRST)
    assert tuner.best == 1 and picks[DRIFT_STEPS:].count(2) <= TRIAL_STEPS


def test_goes_back_to_two_threads_soon_after_the_load_goes_away():
    tuner = settled()
    drive(tuner, BUSY, 4 * EXPLORE_FIRST)            # trials confirm one thread meanwhile: they grow apart again
    picks = drive(tuner, IDLE, 8 * EXPLORE_FIRST)
    assert tuner.best == 2 and picks[-EXPLORE_FIRST:] == [2] * EXPLORE_FIRST


def test_a_lasting_change_of_the_best_counts_speed_brings_the_next_trial_forward():
    tuner = settled()
    faster = {1: 0.013, 2: 0.005}                     # e.g. other sequences joined the batch: less time per token
    picks = drive(tuner, faster, DRIFT_STEPS + 1)
    assert picks[:DRIFT_STEPS] == [2] * DRIFT_STEPS and picks[DRIFT_STEPS] == 1
    assert tuner.interval == EXPLORE_FIRST
    steady = drive(tuner, faster, 2 * TRIAL_STEPS + EXPLORE_FIRST)
    assert steady[2 * TRIAL_STEPS:] == [2] * EXPLORE_FIRST          # no trial until the interval is up


def test_each_batch_size_class_has_its_own_tuner_so_a_batch_change_is_no_load_change():
    tuners = BatchTuners([1, 2])
    assert tuners.for_batch(3) is tuners.for_batch(4) is not tuners.for_batch(5)
    assert tuners.for_batch(1) is not tuners.for_batch(2) and tuners.for_batch(0) is tuners.for_batch(1)
    per_token = {1: {1: 0.013, 2: 0.010}, 8: {1: 0.0030, 2: 0.0016}}   # eight sequences: far less per token
    picks = []
    for step in range(8 * EXPLORE_LAST):
        batch = 1 if step // 40 % 2 else 8                              # sequences come and go every 40 steps
        tuner = tuners.for_batch(batch)
        n = tuner.pick()
        picks.append(n)
        tuner.record(n, batch, batch * per_token[batch][n])
    assert tuners.best == tuners.for_batch(8).best == 2
    assert tuners.for_batch(1).interval == tuners.for_batch(8).interval == EXPLORE_LAST   # no drift seen
    assert picks.count(1) < 0.01 * len(picks)


def test_kernel_threads_follows_numbas_count_for_each_thread():
    seen = {}

    def worker(n: int) -> None:
        seen["fresh", n] = kernel_threads()                 # a thread that never set a count has numba's default
        numba.set_num_threads(n)
        seen[n] = [kernel_threads() for _ in range(3)]

    for n in (1, numba.config.NUMBA_NUM_THREADS):
        t = threading.Thread(target=worker, args=(n,))
        t.start()
        t.join()
        assert seen[n] == [n, n, n] and seen["fresh", n] == numba.config.NUMBA_NUM_THREADS
    assert kernel_threads() == numba.get_num_threads()
