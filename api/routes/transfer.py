"""POST /api/pull and POST /api/push: registry transfers streamed as progress lines."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify

from api.app import services
from api.create import store_error
from api.errors import APIError, bad_request, not_found
from api.schemas import field, model_field, read_body
from api.streaming import ndjson
from registry.client import Progress, RegistryClient, RegistryError
from registry.errors import InvalidName, StoreError
from registry.names import ModelName

bp = Blueprint("transfer", __name__)


@bp.post("/api/pull")
def pull() -> Response:
    body = read_body()
    name = _name(model_field(body))
    client = RegistryClient(services().store)
    return _progress(client.pull(name, field(body, "insecure", bool, False)), field(body, "stream", bool, True))


@bp.post("/api/push")
def push() -> Response:
    body = read_body()
    raw = model_field(body)
    if not raw:
        raise bad_request("model is required")
    name = _name(raw)
    store = services().store
    if store.resolve(name) is None:
        raise not_found(f"model '{raw}' not found")
    client = RegistryClient(store)
    return _progress(client.push(name, field(body, "insecure", bool, False)), field(body, "stream", bool, True))


def _name(raw: str) -> ModelName:
    try:
        return ModelName.parse(raw)
    except InvalidName:
        raise bad_request("invalid model name") from None


def _progress(events: Iterator[Progress], stream: bool) -> Response:
    events = _as_api_errors(events)
    if stream:
        return ndjson(events, _progress_json)
    return jsonify(_progress_json(deque(events, maxlen=1)[0]))   # stream:false: only the last line


def _as_api_errors(events: Iterator[Progress]) -> Iterator[Progress]:
    """Registry failures as HTTP statuses: a missing remote model is 404, other remote failures 502."""
    try:
        yield from events
    except RegistryError as exc:
        raise APIError(404 if exc.status == 404 else 502, str(exc)) from None
    except StoreError as exc:
        raise store_error(exc) from None


def _progress_json(p: Progress) -> dict:
    """{"status", "digest", "total", "completed"}; zero and missing fields are omitted, as Ollama does."""
    out: dict = {"status": p.status}
    if p.digest:
        out["digest"] = p.digest
    if p.total:
        out["total"] = p.total
    if p.completed:
        out["completed"] = p.completed
    return out
