"""POST /api/embed and the legacy POST /api/embeddings (the work is in api/embedding.py)."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

from api.app import services
from api.durations import keep_alive_seconds
from api.embedding import embed_texts, num_ctx_for, parse_embed, parse_embeddings
from api.errors import APIError, not_found
from api.schemas import read_body

bp = Blueprint("embed", __name__)


@bp.post("/api/embed")
def embed() -> Response:
    started_ns = time.perf_counter_ns()
    req = parse_embed(read_body())
    svc = services()
    record = svc.find(req.model)
    keep_alive = keep_alive_seconds(req.keep_alive, svc.settings.keep_alive)
    num_ctx = num_ctx_for(record, req.options)
    if not req.texts and keep_alive == 0:
        svc.pool.unload(record.digest)                 # load-only with keep_alive 0: nothing to load
        return jsonify({"model": req.model, "embeddings": []})
    entry, load_ns = svc.pool.acquire(record, keep_alive)
    try:
        vectors, n_tokens = embed_texts(entry, req.texts, req.truncate, req.dimensions, num_ctx=num_ctx)
    finally:
        svc.pool.release(entry)
    out = {"model": req.model, "embeddings": vectors.tolist()}
    if req.texts:
        out.update(total_duration=time.perf_counter_ns() - started_ns, load_duration=load_ns,
                   prompt_eval_count=n_tokens)
    return jsonify(out)


@bp.post("/api/embeddings")
def embeddings() -> Response:
    req = parse_embeddings(read_body())
    svc = services()
    try:
        record = svc.find(req.model)
    except APIError as exc:
        if exc.status != 404:
            raise
        raise not_found(f"model \"{req.model}\" not found, try pulling it first") from None
    keep_alive = keep_alive_seconds(req.keep_alive, svc.settings.keep_alive)
    num_ctx = num_ctx_for(record, req.options)
    if not req.prompt and keep_alive == 0:
        svc.pool.unload(record.digest)
        return jsonify({"embedding": []})
    entry, _ = svc.pool.acquire(record, keep_alive)
    try:
        texts = [req.prompt] if req.prompt else []
        vectors, _ = embed_texts(entry, texts, num_ctx=num_ctx, normalize=False)
    finally:
        svc.pool.release(entry)
    return jsonify({"embedding": vectors[0].tolist() if req.prompt else []})
