"""POST /api/generate."""

from __future__ import annotations

import time
from contextlib import ExitStack

from flask import Blueprint, Response, jsonify

from api import options, prompt
from api.app import services
from api.durations import keep_alive_seconds
from api.embedding import require_completion
from api.errors import bad_request
from api.formats import logprobs_json, prepare_output
from api.model_pool import ModelRecord
from api.responses import final_fields, gather, run_steps
from api.schemas import GenerateRequest, parse_generate, read_body
from api.streaming import ndjson, now_rfc3339

bp = Blueprint("generate", __name__)


@bp.post("/api/generate")
def generate() -> Response:
    started_ns = time.perf_counter_ns()
    req = parse_generate(read_body())
    svc = services()
    record = svc.find(req.model)
    keep_alive = keep_alive_seconds(req.keep_alive, svc.settings.keep_alive)
    if req.raw and (req.template or req.system or req.context):
        raise bad_request("raw mode does not support template, system, or context")
    if not req.prompt and keep_alive == 0:
        svc.pool.unload(record.digest)
        return jsonify(_chunk(req.model, "", done=True, done_reason="unload"))
    require_completion(record, req.model, "generate")
    _check_capabilities(req, record)
    run = options.build(options.merge(record.params, req.options))
    template = None if req.raw else prompt.parse_template(req.template or record.template or prompt.DEFAULT_TEMPLATE)
    entry, load_ns = svc.pool.acquire(record, keep_alive)
    with ExitStack() as release_unless_running:
        release_unless_running.callback(svc.pool.release, entry)
        if not req.prompt:
            return jsonify(_chunk(req.model, "", done=True, done_reason="load"))
        tokenizer = entry.model.tokenizer
        text = req.prompt if req.raw else prompt.render(
            template, prompt.generate_messages(record, req.system, with_history=not req.context),
            tokenizer=tokenizer, prompt=req.prompt, suffix=req.suffix, think=req.think)
        tokens = prompt.encode(tokenizer, text, req.context)
        run, constraint = prepare_output(run, req.format, req.logprobs, tokenizer)
        release_unless_running.pop_all()          # from here run_steps releases the model when it ends
    run_state = run_steps(svc.pool, entry, tokens, run, started_ns, load_ns, constraint)

    def to_json(step) -> dict:
        chunk = _chunk(req.model, step.text, done=step.done_reason is not None)
        if step.logprob is not None:
            chunk["logprobs"] = logprobs_json(step, tokenizer)
        if step.done_reason is not None:
            chunk.update(final_fields(step, run_state, with_context=not req.raw))
        return chunk

    if req.stream:
        return ndjson(run_state.steps, to_json, run_state.headers)
    response = jsonify(gather(map(to_json, run_state.steps), ("response",)))
    response.headers.update(run_state.headers)
    return response


def _check_capabilities(req: GenerateRequest, record: ModelRecord) -> None:
    """400 when the model's own template cannot do what the request asks: fill in the middle (``suffix`` needs
    .Suffix, Ollama's "insert") or thinking."""
    if req.suffix:
        prompt.insert_template(record)
    if req.think:
        prompt.require_thinking(prompt.parse_template(record.template or prompt.DEFAULT_TEMPLATE), req.think, req.model)


def _chunk(model: str, text: str, done: bool, done_reason: str | None = None) -> dict:
    chunk = {"model": model, "created_at": now_rfc3339(), "response": text, "done": done}
    if done_reason:
        chunk["done_reason"] = done_reason
    return chunk
