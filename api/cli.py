"""The `pollama` command line. `serve` builds the app; every other command talks to a server over HTTP
(api/client.py), so they start fast and never load the engine. The commands live in api/commands/."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from api.client import Client, ClientError
from api.commands import INTERRUPTED, imports, models, transfer
from api.commands.create import create
from api.commands.run import Session, run
from api.config import Settings
from registry.errors import StoreError
from registry.pypi_models import FetchError

ENV_HELP = ("environment:\n  POLLAMA_HOST     the server's address (default 127.0.0.1:11434)\n"
            "  POLLAMA_API_KEY  sent as a bearer token (needed when the server has one)")


def serve(settings: Settings) -> int:
    from waitress import serve as waitress_serve

    from api.admission import http_threads
    from api.app import create_app
    from api.gguf_import import ensure_default_model
    from api.guard import is_loopback
    from api.model_imports import ensure_models

    address, port = settings.bind
    if not is_loopback(address) and not settings.api_key:
        raise ValueError(f"refusing to serve on {address} without authentication: set POLLAMA_API_KEY "
                         "(clients then send it as a bearer token) or listen on 127.0.0.1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = create_app(settings)
    if settings.default_model:
        ensure_default_model(app.extensions["pollama"].store, settings.default_model, settings.cache_dir)
    ensure_models(app.extensions["pollama"].store, settings.import_models, settings.cache_dir)
    logging.getLogger("pollama").info("pollama listening on http://%s:%d (models in %s)", address, port,
                                      settings.models_dir)
    # lookahead lets waitress notice a client that went away while its response is still being generated;
    # http_threads explains the thread count (room for every running and waiting request, plus control endpoints)
    threads = http_threads(settings)
    waitress_serve(app, host=address, port=port, threads=threads, connection_limit=threads + 100,
                   channel_request_lookahead=1, ident="pollama")
    return 0


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides = {
        "host": args.host, "models_dir": args.models, "num_threads": args.threads, "keep_alive": args.keep_alive,
        "num_parallel": args.parallel, "max_queue": args.max_queue,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    return replace(settings, default_model=None) if args.no_default_model else settings


def _serve_command(args: argparse.Namespace) -> int:
    try:
        return serve(_settings_from(args))
    except (OSError, ValueError, FetchError, StoreError) as exc:   # no traceback for a failed model fetch
        print(f"Error: {exc}", file=sys.stderr)
        return 1


# -- client commands: each takes (client, args) and returns the exit status ----------------------------------

def _run(client: Client, args: argparse.Namespace) -> int:
    session = Session(args.model, format=args.format, keep_alive=args.keepalive, verbose=args.verbose)
    return run(client, session, args.prompt, insecure=args.insecure)


def _create(client: Client, args: argparse.Namespace) -> int:
    return create(client, args.model, Path(args.file).expanduser(), args.quantize)


def _pull(client: Client, args: argparse.Namespace) -> int:
    return transfer.pull(client, args.model, args.insecure)


def _push(client: Client, args: argparse.Namespace) -> int:
    return transfer.push(client, args.model, args.insecure)


def _show(client: Client, args: argparse.Namespace) -> int:
    return models.show(client, args.model, args.field)


def _stop(client: Client, args: argparse.Namespace) -> int:
    return models.stop(client, args.model)


def _list(client: Client, args: argparse.Namespace) -> int:
    return models.list_models(client, args.prefix)


def _ps(client: Client, args: argparse.Namespace) -> int:
    return models.ps(client)


def _cp(client: Client, args: argparse.Namespace) -> int:
    return models.copy(client, args.source, args.destination)


def _rm(client: Client, args: argparse.Namespace) -> int:
    return models.remove(client, args.models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pollama", description="Large language model runner (Ollama's API).",
                                     epilog=ENV_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--version", action="store_true", help="show the client and server versions")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(sub)
    _add_client_commands(sub)
    return parser


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="start the server (POLLAMA_* variables or these flags)",
                       description="Start the server. Flags override the POLLAMA_* environment variables.")
    p.add_argument("--host", help="address:port to listen on (POLLAMA_HOST, default 127.0.0.1:11434)")
    p.add_argument("--models", type=_path, help="models directory (POLLAMA_MODELS, default ~/.pollama/models)")
    p.add_argument("--threads", type=int, help="compute threads per model (POLLAMA_NUM_THREADS, 0 = auto)")
    p.add_argument("--keep-alive", help="how long an idle model stays loaded (POLLAMA_KEEP_ALIVE, default 5m)")
    p.add_argument("--parallel", type=int, help="sequences per model (POLLAMA_NUM_PARALLEL)")
    p.add_argument("--max-queue", type=int, help="waiting requests before 503 (POLLAMA_MAX_QUEUE)")
    p.add_argument("--no-default-model", action="store_true",
                   help="do not fetch smollm2:135m at start (or POLLAMA_NO_DEFAULT_MODEL=1)")


def _add_client_commands(sub) -> None:
    def add(name: str, help_text: str, handler, *positionals: tuple[str, dict], aliases=()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, aliases=list(aliases), epilog=ENV_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        for arg, kwargs in positionals:
            p.add_argument(arg, **kwargs)
        p.set_defaults(handler=handler)
        return p

    model = ("model", {"metavar": "MODEL"})
    p = add("run", "Run a model: answer PROMPT, or chat when none is given", _run, model,
            ("prompt", {"nargs": "*", "metavar": "PROMPT", "help": "the prompt (stdin is read when piped)"}))
    p.add_argument("--format", help='response format (e.g. "json")')
    p.add_argument("--keepalive", help="how long the model stays loaded afterwards (e.g. 5m)")
    p.add_argument("--verbose", action="store_true", help="show timings for the response")
    p.add_argument("--insecure", action="store_true", help="pull over plain HTTP if the model is missing")
    p = add("create", "Create a model from a Modelfile", _create, model)
    p.add_argument("-f", "--file", default="Modelfile", help="the Modelfile (default: ./Modelfile)")
    p.add_argument("-q", "--quantize", help="quantize the weights to this type (e.g. q4_1)")
    p = add("show", "Show information for a model", _show, model)
    fields = p.add_mutually_exclusive_group()
    for name in ("license", "modelfile", "parameters", "system", "template"):
        fields.add_argument(f"--{name}", dest="field", action="store_const", const=name, help=f"show the {name}")
    add("stop", "Stop a running model", _stop, model)
    for p in (add("pull", "Pull a model from a registry", _pull, model),
              add("push", "Push a model to a registry", _push, model)):
        p.add_argument("--insecure", action="store_true", help="use plain HTTP (a local or private registry)")
    add("list", "List models", _list,
        ("prefix", {"nargs": "?", "metavar": "PREFIX", "help": "only names starting with this"}), aliases=["ls"])
    add("ps", "List running models", _ps)
    add("cp", "Copy a model", _cp, ("source", {"metavar": "SOURCE"}),
        ("destination", {"metavar": "DESTINATION"}))
    add("rm", "Remove a model", _rm, ("models", {"nargs": "+", "metavar": "MODEL"}))
    imports.add_parser(sub)


def _version(client: Client) -> int:
    try:
        client_version = metadata.version("pollama")
    except metadata.PackageNotFoundError:
        client_version = "unknown"
    print(f"pollama version is {client_version}")
    try:
        print(f"server at {client.url} speaks Ollama API {client.version()}")
    except ClientError:
        print(f"Warning: could not connect to a running pollama server at {client.url}", file=sys.stderr)
    return 0


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting `run`'s prompt words and flags mix in any order (`run MODEL --verbose Why is …`), as
    Ollama's CLI does; argparse alone would leave the words after a flag unparsed."""
    args, extra = parser.parse_known_args(argv)
    unknown = [w for w in extra if w.startswith("-")] if args.command == "run" else extra
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.prompt += extra
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if args.command == "serve":
        return _serve_command(args)
    try:
        code = _dispatch(parser, args)
        sys.stdout.flush()          # inside the try: a reader that left (`| head`) is handled below
        return code
    except ClientError as exc:
        print(f"Error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # so the exit flush cannot fail again
    return 1


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        client = Client(settings.host, api_key=settings.api_key)
    except ValueError as exc:          # a malformed POLLAMA_* variable
        raise ClientError(str(exc)) from None
    if args.version:
        return _version(client)
    if args.command is None:
        parser.print_help()
        return 0
    return args.handler(client, args)


if __name__ == "__main__":
    sys.exit(main())
