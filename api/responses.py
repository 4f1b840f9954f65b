"""Running a generation for a route and the final chunk's statistics, shared by generate and chat."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from flask import has_request_context, request

from api.admission import ClientGone
from api.errors import bad_request
from api.model_pool import Loaded, ModelPool
from api.options import RunOptions
from engine.generate import Step, fit_prompt

TRUNCATED_HEADER = "X-Pollama-Prompt-Truncated"   # how many prompt tokens were dropped to fit num_ctx


@dataclass
class RunState:
    steps: Iterator[Step]
    started_ns: int
    load_ns: int
    truncated: int
    headers: dict = field(default_factory=dict)


def run_steps(pool: ModelPool, entry: Loaded, tokens: list[int], run: RunOptions, started_ns: int,
              load_ns: int, constraint=None) -> RunState:
    """Take a decode slot and submit the generation; slot and model are released when its steps end or are abandoned.

    A client that disconnects stops the generation within one step, streamed or not, and the runner cancels the
    sequence: a stream's next write fails and waitress closes the response, which closes the steps; a non-streamed
    answer writes nothing until the end, so between steps it asks waitress (``waitress.client_disconnected``, there
    when channel_request_lookahead > 0) and ends with ClientGone (499), which nobody reads.
    """
    if not tokens:              # e.g. a template that renders nothing for this request
        pool.release(entry)
        raise bad_request("the prompt is empty once templated")
    gone = _disconnect_probe()
    try:
        pool.take_slot(entry, gone)
    except BaseException:
        pool.release(entry)
        raise
    tokens, truncated = fit_prompt(tokens, run.limits.num_ctx, run.limits.num_keep)
    entry.num_ctx = run.limits.num_ctx
    steps = entry.runner.generate(tokens, run.sampling, run.limits, constraint)

    def released() -> Iterator[Step]:
        try:
            for step in steps:
                if gone():
                    raise ClientGone()
                yield step
        finally:
            steps.close()
            pool.free_slot(entry)
            pool.release(entry)

    headers = {TRUNCATED_HEADER: str(truncated)} if truncated else {}
    return RunState(released(), started_ns, load_ns, truncated, headers)


def _disconnect_probe() -> Callable[[], bool]:
    """True once the current request's client has gone (waitress only; other servers never tell)."""
    probe = request.environ.get("waitress.client_disconnected") if has_request_context() else None
    return probe if callable(probe) else _never


def _never() -> bool:
    return False


def final_fields(step: Step, state: RunState, with_context: bool) -> dict:
    """done_reason, context and the timing statistics (integer nanoseconds) of the final chunk."""
    m = step.metrics
    out: dict = {"done_reason": "stop" if step.done_reason == "cancel" else step.done_reason}
    if with_context:
        out["context"] = list(step.context)
    out.update({
        "total_duration": time.perf_counter_ns() - state.started_ns,
        "load_duration": state.load_ns,
        "prompt_eval_count": m.prompt_eval_count,
        "prompt_eval_duration": m.prompt_eval_duration_ns,
        "eval_count": m.eval_count,
        "eval_duration": m.eval_duration_ns,
    })
    if state.truncated:
        out["prompt_truncated"] = state.truncated
    return out


def gather(chunks: Iterable[dict], text_at: tuple[str, ...]) -> dict:
    """A non-streamed answer from its chunks: the texts at ``text_at`` (a key path) joined, logprobs gathered in
    order, everything else from the final chunk."""
    parts, logprobs, last = [], [], {}
    for last in chunks:
        parts.append(_holder(last, text_at)[text_at[-1]])
        logprobs.extend(last.get("logprobs", []))
    _holder(last, text_at)[text_at[-1]] = "".join(parts)
    if logprobs:
        last["logprobs"] = logprobs
    return last


def _holder(chunk: dict, path: tuple[str, ...]) -> dict:
    for key in path[:-1]:
        chunk = chunk[key]
    return chunk
