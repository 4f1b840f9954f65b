"""NDJSON streaming and its single-object twin, with Ollama's error protocol."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator

from flask import Response

from api.errors import APIError, error_response

NDJSON = "application/x-ndjson"


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))   # json.dumps would build one a call
_second: tuple[int, str] = (0, "")          # the last whole second now_rfc3339 formatted, and its text


def now_rfc3339() -> str:
    """UTC time with microseconds and a zone, as Ollama's created_at ("2026-01-02T03:04:05.678901Z").

    Every streamed token carries one, so the date part is formatted once a second."""
    global _second
    now_us = time.time_ns() // 1000
    seconds, micros = divmod(now_us, 1_000_000)
    cached_seconds, text = _second
    if seconds != cached_seconds:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second = (seconds, text)
    return f"{text}.{micros:06d}Z"


def dumps(obj) -> str:
    return _ENCODER.encode(obj)


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
