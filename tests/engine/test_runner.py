"""The Runner's worker thread: continuous batching, prefix reuse, cancellation (real SmolLM2)."""

from __future__ import annotations

import os
import threading
import time

import numba
import numpy as np
import pytest

from engine.generate import Limits
from engine.quant import set_threads
from engine.runner import EngineError, Runner
from engine.sampling import SamplingOptions

GREEDY = SamplingOptions(temperature=0.0, repeat_penalty=1.0)
SHORT = Limits(num_predict=10)
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time,", "1, 2, 3, 4, 5,",
           "The sky is blue because", "My favourite food is"]


@pytest.fixture(scope="module")
def runner(smollm2):
    r = Runner(smollm2.model, smollm2.tokenizer, num_parallel=4)
    yield r
    r.close()


def _tokens(runner, prompt, limits=SHORT, sampling=GREEDY):
    steps = list(runner.generate(runner.tokenizer.encode(prompt), sampling, limits))
    return [s.token for s in steps if s.token is not None], steps[-1]


def test_concurrent_generations_equal_lone_ones(runner):
    alone = {p: _tokens(runner, p)[0] for p in PROMPTS}
    results, before = {}, runner.steps_run

    def worker(p):
        results[p] = _tokens(runner, p)[0]

    threads = [threading.Thread(target=worker, args=(p,)) for p in PROMPTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == alone
    # six sequences of 10 tokens in 4 slots: far fewer forward passes than 6 × 11 run one by one
    assert runner.steps_run - before < 6 * 11 * 0.7


def _held_worker(runner):
    """Keep the worker thread busy until the returned event is set (jobs submitted meanwhile arrive together)."""
    gate = threading.Event()
    threading.Thread(target=runner.call, args=(lambda model: gate.wait(),)).start()
    return gate


def _together(runner, prompts, limits):
    """Submit all prompts while the worker is held; their steps, and the forward passes they took."""
    gate = _held_worker(runner)
    iterators = [runner.generate(runner.tokenizer.encode(p), GREEDY, limits) for p in prompts]
    before = runner.steps_run
    gate.set()
    runs = [list(steps) for steps in iterators]
    return runs, runner.steps_run - before


def _logprob_bits(steps):
    return [(s.token, np.float32(s.logprob.logprob).view(np.uint32)) for s in steps if s.token is not None]


def test_prompts_arriving_together_are_read_in_one_forward_pass(runner):
    """Four prompts that fit one num_batch are read by one forward pass, and each gets the bits it gets alone."""
    prompts = PROMPTS[:4]
    limits = Limits(num_predict=3, logprobs=0)
    alone = [_logprob_bits(list(runner.generate(runner.tokenizer.encode(p), GREEDY, limits))) for p in prompts]
    runs, passes = _together(runner, prompts, limits)
    assert [_logprob_bits(steps) for steps in runs] == alone
    assert passes == 3                 # one pass reads all four prompts (and samples their first tokens), two decode


def test_a_prompt_whose_chunk_does_not_fit_the_pass_waits_whole(runner):
    """num_batch bounds the prompt tokens of one pass. A prompt that does not fit the rest waits for the next pass
    rather than being cut: cut here, its last token would be a one-token forward call, another float order."""
    prompts = ["Rivers carry sand", "Apples and pears grow in the orchard behind the old farmhouse"]
    assert [len(runner.tokenizer.encode(p)) for p in prompts] == [4, 13]       # 16 - 4 = 12 < 13
    limits = Limits(num_predict=1, num_batch=16, logprobs=0)
    alone = [_logprob_bits(list(runner.generate(runner.tokenizer.encode(p), GREEDY, limits))) for p in prompts]
    runs, passes = _together(runner, prompts, limits)
    assert [_logprob_bits(steps) for steps in runs] == alone
    assert passes == 2


def test_seeded_sampling_is_independent_of_other_traffic(runner):
    sampling = SamplingOptions(temperature=1.0, seed=1234)
    alone = _tokens(runner, "Tell me a story.", sampling=sampling)[0]
    noise = threading.Thread(target=_tokens, args=(runner, "Write a poem about rain."))
    noise.start()
    together = _tokens(runner, "Tell me a story.", sampling=sampling)[0]
    noise.join()
    assert together == alone


def test_prefix_of_an_earlier_request_is_reused(runner):
    prompt = "A long shared system prompt that every chat turn starts with. " * 4
    first_tokens, first = _tokens(runner, prompt + "First question?")
    _, second = _tokens(runner, prompt + "Second question?")
    assert second.metrics.prompt_cached > 20


def test_the_same_seeded_request_again_gives_the_same_text(runner):
    """An exact repeat recomputes the prompt's last num_batch chunk as the first run chunked it (a forward call's
    size decides the float order), so its logits, and a seeded draw, are the same; whole chunks are still reused."""
    prompt = runner.tokenizer.encode("Tell me a long story about a lighthouse keeper and the sea. " * 3)
    sampling = SamplingOptions(temperature=1.5, top_k=200, seed=99)
    for limits in (Limits(num_predict=12), Limits(num_predict=12, num_batch=16)):
        runs = [list(runner.generate(prompt, sampling, limits)) for _ in range(3)]
        texts = [[s.token for s in steps if s.token is not None] for steps in runs]
        assert texts[0] == texts[1] == texts[2]
        first, *cached = [steps[-1].metrics.prompt_cached for steps in runs]   # first: what earlier tests left
        last_chunk = first + (len(prompt) - 1 - first) // limits.num_batch * limits.num_batch
        assert cached == [last_chunk] * 2


def test_closing_the_stream_cancels_and_frees_the_slot(runner):
    steps = runner.generate(runner.tokenizer.encode("Count to one thousand:"), GREEDY, Limits(num_predict=-1))
    for _ in range(3):
        next(steps)
    steps.close()
    deadline = time.time() + 5
    while runner.active and time.time() < deadline:
        time.sleep(0.01)
    assert runner.active == 0


def test_num_predict_zero_and_empty_prompt(runner):
    steps = list(runner.generate(runner.tokenizer.encode("Hello"), GREEDY, Limits(num_predict=0)))
    assert len(steps) == 1 and steps[0].done_reason == "length" and steps[0].metrics.eval_count == 0
    with pytest.raises(EngineError):
        list(runner.generate([], GREEDY, Limits()))


def test_context_shift_keeps_generating_past_num_ctx(runner):
    tokens, last = _tokens(runner, "List the numbers:", Limits(num_predict=40, num_ctx=24, num_keep=4))
    assert len(tokens) == 40 and last.done_reason == "length"


def test_logprobs_are_reported_per_token(runner):
    steps = list(runner.generate(runner.tokenizer.encode("Hi"), GREEDY, Limits(num_predict=3, logprobs=5)))
    for step in steps[:-1]:
        assert step.logprob.token == step.token and step.logprob.logprob <= 0
        assert len(step.logprob.top) == 5 and step.logprob.top[0][0] == step.token   # greedy picks the top one


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _until(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def _settled_os_threads() -> int:
    """The process's thread count once no other runner's worker is still on its way out (the module's runner ends
    its thread, and that thread's OpenMP pool, just after its last job)."""
    assert _until(lambda: not any(t.name == "pollama-engine" for t in threading.enumerate()))
    counts = [_os_threads()]
    while len(counts) < 2 or counts[-1] != counts[-2]:
        time.sleep(0.05)
        counts.append(_os_threads())
    return counts[-1]


def test_an_idle_runner_holds_no_threads_and_the_next_job_starts_one(smollm2):
    """The worker thread, and with it the OpenMP pool its kernels started, ends when there is nothing to do: a pool
    that merely exists makes every other pool stop spin-waiting (a second idle model halved decode speed)."""
    before = _settled_os_threads()
    runner = Runner(smollm2.model, smollm2.tokenizer, threads=2, on_thread_start=set_threads)
    try:
        assert not runner.working and _os_threads() == before          # nothing runs before the first job
        first = _tokens(runner, PROMPTS[0])[0]
        assert _until(lambda: not runner.working and _os_threads() == before)
        assert _tokens(runner, PROMPTS[0])[0] == first                  # a new thread picks up the next job
        assert runner.call(lambda model: threading.current_thread().name) == "pollama-engine"
        assert _until(lambda: not runner.working)
    finally:
        runner.close()
    with pytest.raises(EngineError, match="unloaded"):
        runner.generate([1, 2, 3], GREEDY, SHORT)


def test_calls_on_a_measuring_runner_use_its_best_thread_count(smollm2):
    """With threads=0 the tuner picks each step's count; a call between steps (an embedding) runs at its best."""
    runner = Runner(smollm2.model, smollm2.tokenizer, threads=0, on_thread_start=set_threads)
    try:
        best = runner.call(lambda model: numba.get_num_threads())
        assert best == runner.tuners.best == numba.config.NUMBA_NUM_THREADS
    finally:
        runner.close()
