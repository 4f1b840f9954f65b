"""POST /api/tokenize and /api/detokenize (llama.cpp server's shapes)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.app import services
from api.durations import keep_alive_seconds
from api.errors import bad_request
from api.schemas import field, model_field, read_body, token_list

bp = Blueprint("tokenize", __name__)


@bp.post("/api/tokenize")
def tokenize() -> Response:
    body = read_body()
    content = field(body, "content", str, "")
    add_special = field(body, "add_special", bool, False)
    with _tokenizer(body) as tokenizer:
        return jsonify({"tokens": tokenizer.encode(content, add_special=add_special, parse_special=True)})


@bp.post("/api/detokenize")
def detokenize() -> Response:
    body = read_body()
    tokens = token_list(body, "tokens")
    with _tokenizer(body) as tokenizer:
        bad = next((t for t in tokens if not tokenizer.is_valid(t)), None)
        if bad is not None:
            raise bad_request(f"token {bad} is outside the vocabulary (0..{tokenizer.vocab_size - 1})")
        return jsonify({"content": tokenizer.decode(tokens)})


class _tokenizer:
    """The model's tokenizer, holding the model loaded for the duration of the request."""

    def __init__(self, body: dict) -> None:
        svc = services()
        self.pool = svc.pool
        record = svc.find(model_field(body))
        self.entry, _ = svc.pool.acquire(record, keep_alive_seconds(body.get("keep_alive"), svc.settings.keep_alive))

    def __enter__(self):
        return self.entry.model.tokenizer

    def __exit__(self, *exc) -> None:
        self.pool.release(self.entry)
