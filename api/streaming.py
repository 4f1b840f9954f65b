"""NDJSON streaming and its single-object twin, with Ollama's error protocol."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

from flask import Response

from api.errors import APIError, error_response

NDJSON = "application/x-ndjson"


def now_rfc3339() -> str:
    """UTC time with fractional seconds and a zone, as Ollama's created_at."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def ndjson(events: Iterator, to_json: Callable[[object], dict], headers: dict | None = None) -> Response:
    """Stream one compact JSON object per line.

    An error before the first event becomes a real HTTP status; after it, one in-band {"error"} line. Closing the
    response (client gone) closes ``events``, which cancels the work behind it.
    """
    try:
        first = next(events)
    except StopIteration:
        first = None
    except APIError as exc:
        return error_response(exc.status, exc.message)
    except Exception as exc:  # noqa: BLE001 - engine failures become a JSON error, never a traceback
        return error_response(500, str(exc))

    def body() -> Iterable[str]:
        try:
            if first is not None:
                yield dumps(to_json(first)) + "\n"
            for event in events:
                yield dumps(to_json(event)) + "\n"
        except Exception as exc:  # noqa: BLE001 - reported in-band once streaming has begun
            yield dumps({"error": str(exc)}) + "\n"
        finally:
            close = getattr(events, "close", None)
            if close:
                close()

    return Response(body(), mimetype=NDJSON, headers=headers)
