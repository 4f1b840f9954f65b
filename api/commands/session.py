"""What `pollama run` sends and shows, shared by the one-shot answer and the interactive chat."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from api.commands.display import Spinner, go_duration


@dataclass
class Session:
    """What a run sends with each request; the interactive commands (/set …) change it."""

    model: str
    format: str | None = None
    keep_alive: str | None = None
    verbose: bool = False
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)     # the chat so far, system message included

    def request(self, **body: Any) -> dict:
        """A generate/chat body with the session's settings (unset ones left out, so the model's apply)."""
        extra = {"format": self.format, "keep_alive": self.keep_alive, "options": self.options or None}
        return {"model": self.model, **body, **{k: v for k, v in extra.items() if v is not None}}


def stream_text(chunks: Iterator[dict], text_of: Callable[[dict], str], out: TextIO) -> dict:
    """Write each chunk's text as it arrives, with a spinner until the first one; return the final chunk."""
    spinner, final = Spinner().start(), {}
    try:
        for final in chunks:
            spinner.stop()
            out.write(text_of(final))
            out.flush()
    finally:
        spinner.stop()
        chunks.close()
    return final


def print_summary(final: dict, out: TextIO) -> None:
    """Ollama's `--verbose` statistics: durations as Go prints them, and the prompt and generation rates."""
    lines = []
    for label, key in (("total duration", "total_duration"), ("load duration", "load_duration")):
        if final.get(key):
            lines.append(f"{label + ':':<22}{go_duration(int(final[key]))}")
    for prefix, count_key, ns_key in (("prompt eval", "prompt_eval_count", "prompt_eval_duration"),
                                      ("eval", "eval_count", "eval_duration")):
        count, ns = int(final.get(count_key) or 0), int(final.get(ns_key) or 0)
        if count:
            lines.append(f"{prefix + ' count:':<22}{count} token(s)")
        if ns:
            lines.append(f"{prefix + ' duration:':<22}{go_duration(ns)}")
            lines.append(f"{prefix + ' rate:':<22}{count / (ns / 1e9):.2f} tokens/s")
    out.write("\n".join(lines) + "\n")
    out.flush()
