"""Admission control: one counter of the requests that wait, for a model load or a decode slot, across all models.

Ollama bounds only the requests that still need scheduling (OLLAMA_MAX_QUEUE) and lets requests for a loaded model
wait on a semaphore without limit. pollama counts every request that has to wait, whatever it waits for, and answers
503 at once (before blocking) when ``max_queue`` are waiting already. A request that finds its model loaded and a slot
free never counts as waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from api.config import Settings
from api.errors import APIError

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"   # Ollama's words (two spaces)
RETRY_AFTER_S = 1
CANCELED_STATUS = 499                # Ollama's status for a request whose client left while it was scheduled
CONTROL_THREADS = 8                  # HTTP threads left for /, /api/version, /api/tags, /api/ps and the 503s


class ServerBusy(APIError):
    """Too many requests are waiting: 503 with Retry-After (routes/ps.py renders it)."""

    def __init__(self) -> None:
        super().__init__(503, BUSY_MESSAGE)


class ClientGone(APIError):
    """The client disconnected while its request waited or generated; nobody reads this answer."""

    def __init__(self) -> None:
        super().__init__(CANCELED_STATUS, "request canceled")


class Admission:
    """Counts waiting requests; ``wait()`` admits one more or raises ServerBusy without blocking."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max(0, max_queue)
        self.rejected = 0                       # 503s answered so far (observable in tests and benchmarks)
        self._waiting = 0
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextmanager
    def wait(self) -> Iterator[None]:
        """Count the caller as waiting while inside the block; ServerBusy at once if the queue is full."""
        with self._lock:
            if self._waiting >= self.max_queue:
                self.rejected += 1
                raise ServerBusy()
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1


def http_threads(settings: Settings) -> int:
    """waitress worker threads for ``settings``.

    Every running generation and every waiting request holds one HTTP thread (waitress runs the response iterator on
    its worker thread). If all threads were taken, new connections would sit in waitress's task queue unanswered: no
    503 and no /api/version. So the count covers the running sequences of every model that may be loaded, the
    waiting requests admitted, and CONTROL_THREADS more for the control endpoints and the 503 answers themselves.
    Idle Python threads cost little (their stacks are reserved, not resident), so the default settings' 532 are fine.
    """
    running = max(1, settings.num_parallel) * max(1, settings.max_loaded_models)
    return max(16, running + max(0, settings.max_queue) + CONTROL_THREADS)
