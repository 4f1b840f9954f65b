"""`pollama pull` and `pollama push`: the server does the transfer; we show its progress."""

from __future__ import annotations

import sys

from api.client import Client
from api.commands import INTERRUPTED
from api.commands.progress import show_progress


def pull(client: Client, model: str, insecure: bool = False) -> int:
    """Pull ``model``; Ctrl-C stops it with the finished bytes kept, so the same command resumes."""
    try:
        show_progress(client.pull(model, insecure), "pulling")
    except KeyboardInterrupt:
        print(f"\npull interrupted: the data received so far is kept; run `pollama pull {model}` again to resume",
              file=sys.stderr)
        return INTERRUPTED
    return 0


def push(client: Client, model: str, insecure: bool = False) -> int:
    """Push ``model``; layers the registry already has are skipped, so an interrupted push resumes too."""
    try:
        show_progress(client.push(model, insecure), "pushing")
    except KeyboardInterrupt:
        print(f"\npush interrupted: run `pollama push {model}` again to send the rest", file=sys.stderr)
        return INTERRUPTED
    return 0
