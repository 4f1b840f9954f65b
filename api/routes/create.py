"""POST /api/create (both request forms; the logic is in api/create.py)."""

from __future__ import annotations

from collections import deque

from flask import Blueprint, Response, jsonify

from api.app import services
from api.create import prepare, run
from api.schemas import field, read_body
from api.streaming import ndjson

bp = Blueprint("create", __name__)


@bp.post("/api/create")
def create() -> Response:
    body = read_body()
    store = services().store
    plan = prepare(store, body)                    # every 400 that needs no writing happens here
    statuses = run(store, plan)
    if field(body, "stream", bool, True):
        return ndjson(statuses, _status)
    return jsonify(_status(deque(statuses, maxlen=1)[0]))   # stream:false: only the last line


def _status(status: str) -> dict:
    return {"status": status}
