"""The OpenAI-compatible API under /v1: chat completions, completions, models and embeddings.

Each request is translated into the native one (api/openai_format.py) and runs the same flow as /api/chat or
/api/generate; every error, even a malformed body, is answered in OpenAI's {"error": {...}} shape.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack

from flask import Blueprint, Response, jsonify
from werkzeug.exceptions import HTTPException

from api import openai_format as fmt
from api import options, prompt
from api.admission import RETRY_AFTER_S, ServerBusy
from api.app import services
from api.chat_prompt import chat_prompt_tokens, check_capabilities, parse_chat
from api.durations import keep_alive_seconds
from api.embedding import embed_texts, require_completion
from api.errors import APIError
from api.formats import prepare_output
from api.responses import RunState, run_steps
from api.schemas import field, read_body
from engine.runner import EngineError

bp = Blueprint("openai", __name__, url_prefix="/v1")
log = logging.getLogger("pollama")


@bp.errorhandler(APIError)
def _api_error(exc: APIError) -> Response:
    response = fmt.error_response(exc.status, exc.message, getattr(exc, "param", None))
    if isinstance(exc, ServerBusy):
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return fmt.error_response(exc.code or 500, exc.description or exc.name)


@bp.errorhandler(EngineError)
def _engine_error(exc: EngineError) -> Response:
    return fmt.error_response(500, str(exc))


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected error")
    return fmt.error_response(500, f"internal error: {type(exc).__name__}")


@bp.post("/chat/completions")
def chat_completions() -> Response:
    started_ns = time.perf_counter_ns()
    body = read_body()
    req, with_usage = parse_chat(fmt.native_chat_body(body)), fmt.include_usage(body)
    if not req.model:
        raise fmt.InvalidParam("model is required", "model")
    svc = services()
    record = svc.find(req.model)
    require_completion(record, req.model, "chat")
    template = prompt.parse_template(record.template or prompt.DEFAULT_TEMPLATE)
    check_capabilities(template, req, record)
    run = options.build(options.merge(record.params, req.options))
    entry, load_ns = svc.pool.acquire(record, keep_alive_seconds(req.keep_alive, svc.settings.keep_alive))
    with ExitStack() as release_unless_running:
        release_unless_running.callback(svc.pool.release, entry)
        tokenizer = entry.model.tokenizer
        _, tokens = chat_prompt_tokens(record, req, template, tokenizer, run.limits.num_ctx)
        run, constraint = prepare_output(run, req.format, req.logprobs, tokenizer)
        release_unless_running.pop_all()          # from here run_steps releases the model when it ends
    state = run_steps(svc.pool, entry, tokens, run, started_ns, load_ns, constraint)
    if req.stream:
        env = fmt.Envelope.new("chatcmpl", "chat.completion.chunk", req.model)
        return fmt.sse(fmt.chat_chunks(env, state.steps, with_usage, tokenizer), state.headers)
    env = fmt.Envelope.new("chatcmpl", "chat.completion", req.model)
    return _json(fmt.chat_completion(env, fmt.collect(state.steps, tokenizer, req.logprobs is not None)), state)


@bp.post("/completions")
def completions() -> Response:
    started_ns = time.perf_counter_ns()
    body = read_body()
    model, text, top = field(body, "model", str, ""), fmt.completion_prompt(body), fmt.completion_logprobs(body)
    stream, with_usage, suffix = field(body, "stream", bool, False), fmt.include_usage(body), field(body, "suffix", str)
    if not model:
        raise fmt.InvalidParam("model is required", "model")
    svc = services()
    record = svc.find(model)
    require_completion(record, model, "generate")
    fim = prompt.insert_template(record) if suffix else None
    run = options.build(options.merge(record.params, fmt.sampling_options(body)))
    entry, load_ns = svc.pool.acquire(record, keep_alive_seconds(None, svc.settings.keep_alive))
    with ExitStack() as release_unless_running:
        release_unless_running.callback(svc.pool.release, entry)
        tokenizer = entry.model.tokenizer
        # raw: the prompt is used as is, unless it has a suffix to fill in before: {Prompt, Suffix} in the template
        source = text if fim is None else prompt.render(fim, [], tokenizer=tokenizer, prompt=text, suffix=suffix)
        tokens = prompt.encode(tokenizer, source, [])
        if not tokens:
            raise fmt.InvalidParam("prompt is empty", "prompt")
        run, constraint = prepare_output(run, None, top, tokenizer)
        release_unless_running.pop_all()
    state = run_steps(svc.pool, entry, tokens, run, started_ns, load_ns, constraint)
    env = fmt.Envelope.new("cmpl", "text_completion", model)
    if stream:
        return fmt.sse(fmt.completion_chunks(env, state.steps, with_usage, tokenizer, len(text)), state.headers)
    return _json(fmt.text_completion(env, fmt.collect(state.steps, tokenizer, top is not None), len(text)), state)


@bp.get("/models")
def list_models() -> Response:
    cards = [fmt.model_card(m.name.display, int(m.modified.timestamp()), m.name.namespace)
             for m in services().store.list_models()]
    return jsonify({"object": "list", "data": cards})


@bp.get("/models/<path:model_id>")
def retrieve_model(model_id: str) -> Response:
    svc = services()
    record = svc.find(model_id)
    entry = next((m for m in svc.store.list_models() if m.name.equal_fold(record.name)), None)
    created = int(entry.modified.timestamp()) if entry else 0
    return jsonify(fmt.model_card(model_id, created, record.name.namespace))


@bp.post("/embeddings")
def embeddings() -> Response:
    body = read_body()
    model, texts, encoding = field(body, "model", str, ""), fmt.embedding_inputs(body.get("input")), \
        fmt.encoding_format(body)
    dimensions = field(body, "dimensions", int)
    if dimensions is not None and dimensions < 1:
        raise fmt.InvalidParam("dimensions must be a positive integer", "dimensions")
    svc = services()
    record = svc.find(model)
    entry, _ = svc.pool.acquire(record, keep_alive_seconds(None, svc.settings.keep_alive))
    try:
        vectors, n_tokens = embed_texts(entry, texts, dimensions=dimensions)          # (n, dim), truncated inputs
    finally:
        svc.pool.release(entry)
    return jsonify(fmt.embedding_list(model, vectors, encoding, n_tokens))


def _json(obj: dict, state: RunState) -> Response:
    response = jsonify(obj)
    response.headers.update(state.headers)
    return response
