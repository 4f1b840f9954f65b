"""The `pollama` command line. `serve` builds the app; every other command talks to a server over HTTP."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from api.config import Settings
from api.routes.meta import VERSION


def serve(settings: Settings) -> int:
    from waitress import serve as waitress_serve

    from api.app import create_app
    from api.gguf_import import ensure_default_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = create_app(settings)
    if settings.default_model:
        ensure_default_model(app.extensions["pollama"].store, settings.default_model, settings.cache_dir)
    address, port = settings.bind
    logging.getLogger("pollama").info("pollama listening on http://%s:%d (models in %s)", address, port,
                                      settings.models_dir)
    # lookahead lets waitress notice a client that went away while its response is still being generated
    waitress_serve(app, host=address, port=port, threads=16, channel_request_lookahead=1, ident="pollama")
    return 0


def _settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides = {
        "host": args.host, "models_dir": args.models, "num_threads": args.threads, "keep_alive": args.keep_alive,
        "num_parallel": args.parallel, "max_queue": args.max_queue,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    return replace(settings, default_model=None) if args.no_default_model else settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pollama", description="A local LLM server speaking the Ollama API.")
    parser.add_argument("--version", action="version", version=f"pollama {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("serve", help="start the server (POLLAMA_* variables or these flags)")
    p.add_argument("--host", help="address:port to listen on (POLLAMA_HOST, default 127.0.0.1:11434)")
    p.add_argument("--models", type=_path, help="models directory (POLLAMA_MODELS, default ~/.pollama/models)")
    p.add_argument("--threads", type=int, help="compute threads per model (POLLAMA_NUM_THREADS, 0 = auto)")
    p.add_argument("--keep-alive", help="how long an idle model stays loaded (POLLAMA_KEEP_ALIVE, default 5m)")
    p.add_argument("--parallel", type=int, help="sequences per model (POLLAMA_NUM_PARALLEL)")
    p.add_argument("--max-queue", type=int, help="waiting requests before 503 (POLLAMA_MAX_QUEUE)")
    p.add_argument("--no-default-model", action="store_true",
                   help="do not fetch smollm2:135m at start (or POLLAMA_NO_DEFAULT_MODEL=1)")
    return parser


def _path(text: str):
    from pathlib import Path

    return Path(text).expanduser()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            return serve(_settings_from(args))
        except (OSError, ValueError) as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
    parser.print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
