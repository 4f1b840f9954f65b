"""GET /api/ps (the loaded models), and the 503 answer of a full admission queue, which needs a Retry-After header."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify

from api import options
from api.admission import RETRY_AFTER_S, ServerBusy
from api.app import services
from api.errors import error_response
from api.model_pool import Loaded
from api.routes.models import _details
from registry import manifest as mf
from registry.store import Store

bp = Blueprint("ps", __name__)
MAX_DURATION_S = (2**63 - 1) / 1e9     # Go's time.Duration limit: "forever" shows as now + ~292 years (~2318)


@bp.get("/api/ps")
def ps() -> Response:
    store, now = services().store, time.time()
    loaded = sorted(services().pool.loaded(), key=lambda e: _expiry(e, now), reverse=True)
    return jsonify({"models": [_describe(store, e, _expiry(e, now)) for e in loaded]})


@bp.app_errorhandler(ServerBusy)
def _busy(exc: ServerBusy) -> Response:
    response = error_response(exc.status, exc.message)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _describe(store: Store, entry: Loaded, expires_at: float) -> dict:
    record = entry.record
    weights = [record.manifest.layer(mf.MEDIA_MODEL), *record.manifest.layers_of(mf.MEDIA_ADAPTER)]
    num_ctx = entry.num_ctx or options.build(options.merge(record.params)).limits.num_ctx
    return {
        "name": record.name.display, "model": record.name.display,
        "size": sum(layer.size for layer in weights),           # bytes of weights held in memory
        "digest": record.digest, "details": _details(store, record.manifest),
        "expires_at": _local_time(expires_at), "size_vram": 0, "context_length": num_ctx,
    }


def _expiry(entry: Loaded, now: float) -> float:
    """Seconds since the epoch; while in use (no timer running yet), now + keep_alive as Ollama shows it."""
    if entry.users or math.isinf(entry.expires_at):
        return now + min(entry.keep_alive_s, MAX_DURATION_S)
    return entry.expires_at


def _local_time(epoch_s: float) -> str:
    """RFC 3339 local time with its offset, as Ollama's expires_at (Go's time.Time needs the zone)."""
    return datetime.fromtimestamp(epoch_s, UTC).astimezone().isoformat(timespec="microseconds")
