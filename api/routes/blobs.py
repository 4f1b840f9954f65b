"""HEAD and POST /api/blobs/:digest: the files a create request refers to, uploaded first."""

from __future__ import annotations

from flask import Blueprint, Response, request

from api.app import services
from api.create import store_error
from api.errors import bad_request, not_found
from registry.errors import InvalidDigest, StoreError
from registry.manifest import normalize_digest

bp = Blueprint("blobs", __name__)
CHUNK_BYTES = 1 << 20


@bp.route("/api/blobs/<path:digest>", methods=["HEAD"])
def has_blob(digest: str) -> Response:
    digest = _parse(digest)
    if not services().store.has_blob(digest):
        raise not_found(f"blob \"{digest}\" not found")
    return Response(status=200)


@bp.post("/api/blobs/<path:digest>")
def upload_blob(digest: str) -> Response:
    """201 once stored; 200 without reading the body when it is already there (clients POST without HEAD).

    The body is hashed while it streams into a temp file; on a mismatch the file is removed and nothing stays.
    """
    digest = _parse(digest)
    store = services().store
    if store.has_blob(digest):
        return Response(status=200)
    stream = request.stream
    try:
        store.write_blob(iter(lambda: stream.read(CHUNK_BYTES), b""), expected_digest=digest)
    except StoreError as exc:
        raise store_error(exc) from None
    return Response(status=201)


def _parse(digest: str) -> str:
    """``sha256:<hex>`` (Ollama also accepts ``sha256-`` and upper-case hex); 400 for anything else."""
    try:
        return normalize_digest(digest)
    except InvalidDigest:
        raise bad_request("invalid digest format") from None
