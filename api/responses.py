"""Running a generation for a route and the final chunk's statistics, shared by generate and chat."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

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
              load_ns: int) -> RunState:
    """Submit the generation; the model is released back to the pool when its steps end or are abandoned."""
    tokens, truncated = fit_prompt(tokens, run.limits.num_ctx, run.limits.num_keep)
    steps = entry.runner.generate(tokens, run.sampling, run.limits)

    def released() -> Iterator[Step]:
        try:
            yield from steps
        finally:
            steps.close()
            pool.release(entry)

    headers = {TRUNCATED_HEADER: str(truncated)} if truncated else {}
    return RunState(released(), started_ns, load_ns, truncated, headers)


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
