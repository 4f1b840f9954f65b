"""POST /api/chat."""

from __future__ import annotations

import time
from contextlib import ExitStack

from flask import Blueprint, Response, jsonify

from api import options, prompt
from api.app import services
from api.chat_prompt import ChatRequest, chat_prompt_tokens, check_capabilities, parse_chat
from api.durations import keep_alive_seconds
from api.embedding import require_completion
from api.errors import bad_request
from api.formats import logprobs_json, prepare_output
from api.responses import final_fields, gather, run_steps
from api.schemas import read_body
from api.streaming import ndjson, now_rfc3339

bp = Blueprint("chat", __name__)


@bp.post("/api/chat")
def chat() -> Response:
    started_ns = time.perf_counter_ns()
    req = parse_chat(read_body())
    if not req.model:
        raise bad_request("model is required")
    svc = services()
    record = svc.find(req.model)
    keep_alive = keep_alive_seconds(req.keep_alive, svc.settings.keep_alive)
    if not req.messages and keep_alive == 0:
        svc.pool.unload(record.digest)
        return jsonify(_chunk(req.model, "", done=True, done_reason="unload"))
    require_completion(record, req.model, "chat")
    template = prompt.parse_template(record.template or prompt.DEFAULT_TEMPLATE)
    check_capabilities(template, req, record)
    run = options.build(options.merge(record.params, req.options))
    entry, load_ns = svc.pool.acquire(record, keep_alive)
    with ExitStack() as release_unless_running:
        release_unless_running.callback(svc.pool.release, entry)
        if not req.messages:
            return jsonify(_chunk(req.model, "", done=True, done_reason="load"))
        tokenizer = entry.model.tokenizer
        text, tokens = chat_prompt_tokens(record, req, template, tokenizer, run.limits.num_ctx)
        if req.debug_render_only:
            return jsonify({**_chunk(req.model, "", done=True), "_debug_info": {
                "rendered_template": text, "image_count": sum(len(m.get("images") or []) for m in req.messages)}})
        run, constraint = prepare_output(run, req.format, req.logprobs, tokenizer)
        release_unless_running.pop_all()          # from here run_steps releases the model when it ends
    return _respond(req, run_steps(svc.pool, entry, tokens, run, started_ns, load_ns, constraint), tokenizer)


def _respond(req: ChatRequest, state, tokenizer) -> Response:
    def to_json(step) -> dict:
        chunk = _chunk(req.model, step.text, done=step.done_reason is not None)
        if step.logprob is not None:
            chunk["logprobs"] = logprobs_json(step, tokenizer)
        if step.done_reason is not None:
            chunk.update(final_fields(step, state, with_context=False))
        return chunk

    if req.stream:
        return ndjson(state.steps, to_json, state.headers)
    response = jsonify(gather(map(to_json, state.steps), ("message", "content")))
    response.headers.update(state.headers)
    return response


def _chunk(model: str, text: str, done: bool, done_reason: str | None = None) -> dict:
    chunk = {"model": model, "created_at": now_rfc3339(), "message": {"role": "assistant", "content": text},
             "done": done}
    if done_reason:
        chunk["done_reason"] = done_reason
    return chunk
