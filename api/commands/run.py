"""`pollama run MODEL [PROMPT]`: one streamed answer, or an interactive chat when no prompt is given."""

from __future__ import annotations

import sys
from typing import TextIO

from api.client import Client, ResponseError
from api.commands.display import Spinner
from api.commands.progress import show_progress
from api.commands.session import Session, print_summary, stream_text


def run(client: Client, session: Session, prompt_words: list[str], insecure: bool = False,
        stdin: TextIO | None = None) -> int:
    """Pull the model if it is missing, then answer ``prompt_words`` (plus piped stdin) or start a chat."""
    stdin = stdin or sys.stdin
    prompts = list(prompt_words)
    interactive = not prompts and stdin.isatty()
    if not stdin.isatty():
        piped = stdin.read()
        if piped:
            prompts.insert(0, piped)
    info = ensure_model(client, session.model, insecure)
    if not interactive:
        return generate_once(client, session, " ".join(prompts))
    from api.commands.repl import Repl  # readline is only wanted at a terminal

    load(client, session)
    return Repl(client, session, info).loop()


def ensure_model(client: Client, model: str, insecure: bool) -> dict:
    """The model's /api/show answer, pulling it first when the server does not have it (as Ollama's run does)."""
    try:
        return client.show(model)
    except ResponseError as exc:
        if exc.status != 404:
            raise
    show_progress(client.pull(model, insecure), "pulling")
    return client.show(model)


def load(client: Client, session: Session) -> None:
    """Load the model with a spinner, so the first prompt is answered without the load delay."""
    spinner = Spinner().start()
    try:
        client.load(session.model, session.keep_alive)
    finally:
        spinner.stop()


def generate_once(client: Client, session: Session, prompt: str, out: TextIO | None = None) -> int:
    """Stream one /api/generate answer to stdout; --verbose adds the timings on stderr."""
    out = out or sys.stdout
    final = stream_text(client.generate(session.request(prompt=prompt)), lambda chunk: chunk.get("response", ""), out)
    if prompt:
        out.write("\n\n")
        out.flush()
    if session.verbose and final.get("done"):
        print_summary(final, sys.stderr)
    return 0
