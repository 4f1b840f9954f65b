"""api.streaming's per-token helpers: the created_at clock and the compact JSON encoder."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

from api.streaming import dumps, now_rfc3339

RFC3339_MICROS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_created_at_is_utc_with_microseconds_and_the_current_time():
    for _ in range(3):                                   # across at least one change of second
        before = datetime.now(UTC)
        stamps = [now_rfc3339() for _ in range(2000)]
        after = datetime.now(UTC)
        assert all(RFC3339_MICROS.fullmatch(s) for s in stamps)
        times = [_parse(s) for s in stamps]
        assert before <= times[0] and times[-1] <= after
        assert times == sorted(times)
        time.sleep(0.4)


def test_created_at_follows_the_clock_into_the_next_second():
    first = _parse(now_rfc3339())
    time.sleep(1.1)
    second = _parse(now_rfc3339())
    assert 1.05 <= (second - first).total_seconds() <= 3


def test_dumps_is_compact_and_keeps_unicode():
    obj = {"model": "m", "response": "héllo \"q\" \n ☃ 🦙", "done": False, "n": [1, 2.5, None]}
    text = dumps(obj)
    assert text == json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    assert "☃" in text and ": " not in text and json.loads(text) == obj
