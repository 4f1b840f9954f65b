"""ThreadTuner: follows whichever thread count measures faster, and notices when that changes; kernel_threads."""

from __future__ import annotations

import threading

import numba

from engine.threads import EXPLORE_EVERY, ThreadTuner, kernel_threads


def drive(tuner: ThreadTuner, cost: dict[int, float], steps: int) -> list[int]:
    picks = []
    for _ in range(steps):
        n = tuner.pick()
        picks.append(n)
        tuner.record(n, 1, cost[n])
    return picks


def test_settles_on_the_faster_count_and_mostly_stays_there():
    tuner = ThreadTuner([1, 2])
    picks = drive(tuner, {1: 0.013, 2: 0.010}, 4 * EXPLORE_EVERY)
    assert tuner.best == 2
    assert picks[-EXPLORE_EVERY // 2:].count(2) == EXPLORE_EVERY // 2      # no trials between explorations
    assert picks.count(1) < len(picks) * 0.2


def test_moves_to_one_thread_when_the_machine_gets_busy():
    tuner = ThreadTuner([1, 2])
    drive(tuner, {1: 0.013, 2: 0.010}, 2 * EXPLORE_EVERY)
    drive(tuner, {1: 0.013, 2: 0.040}, 3 * EXPLORE_EVERY)          # another process now competes for a core
    assert tuner.best == 1


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
