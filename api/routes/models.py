"""GET /api/tags, POST /api/show, POST /api/copy and DELETE /api/delete."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify

from api import options
from api.app import services
from api.errors import bad_request, not_found
from api.model_pool import ModelRecord
from api.schemas import field, model_field, read_body
from engine.gguf import GGUFError, GGUFFile
from registry import manifest as mf
from registry import modelfile
from registry.errors import InvalidName, ModelNotFound, StoreError
from registry.names import ModelName
from registry.store import Store
from registry.template import TemplateError, load_template

bp = Blueprint("models", __name__)
MAX_BRIEF_ARRAY = 5              # longer GGUF arrays (tokens, merges, scores) show as [] unless verbose
HIDDEN_INFO = ("general.name", "tokenizer.chat_template")


@bp.get("/api/tags")
def tags() -> Response:
    store = services().store
    return jsonify({"models": [{
        "name": m.name.display, "model": m.name.display, "modified_at": m.modified.isoformat(), "size": m.size,
        "digest": m.digest, "details": _details(store, m.manifest),
    } for m in store.list_models()]})


@bp.route("/api/show", methods=["POST", "GET"])          # ollama-python 0.1 sent GET with a body
def show() -> Response:
    body = read_body()
    name = model_field(body)
    if not name:
        raise bad_request("model is required")
    svc = services()
    record = svc.find(name)
    system = field(body, "system", str, "") or record.system or ""
    params = {**record.params, **options.merge(field(body, "options", dict))}
    licenses = [svc.store.read_blob(x.digest).decode("utf-8", "replace")
                for x in record.manifest.layers_of(mf.MEDIA_LICENSE)]
    info = _model_info(record, field(body, "verbose", bool, False))
    entry = next((m for m in svc.store.list_models() if m.name.equal_fold(record.name)), None)
    out = {
        "license": "\n".join(licenses), "modelfile": _modelfile(record, system, params, licenses),
        "parameters": "\n".join(f"{k:<30} {_go_text(v, quoted=True)}" for k, v in _param_items(params)),
        "template": record.template or "", "system": system, "details": _details(svc.store, record.manifest),
        "messages": record.messages, "model_info": info, "capabilities": _capabilities(info, record.template),
        "modified_at": entry.modified.isoformat() if entry else "",
    }
    return jsonify({k: v for k, v in out.items() if v or k == "model_info"})


@bp.post("/api/copy")
def copy() -> Response:
    body = read_body()
    source, destination = field(body, "source", str, ""), field(body, "destination", str, "")
    src = _parse(source, f"source \"{source}\" is invalid")
    dst = _parse(destination, f"destination \"{destination}\" is invalid")
    try:
        services().store.copy(src, dst)
    except ModelNotFound:
        raise not_found(f"model \"{source}\" not found") from None
    return Response(status=200)


@bp.delete("/api/delete")
def delete() -> Response:
    """Removes the manifest and every blob no other model references."""
    name = model_field(read_body())
    if not name:
        raise bad_request("model is required")
    try:
        services().store.delete(_parse(name, f"name \"{name}\" is invalid"))
    except ModelNotFound:
        raise not_found(f"model '{name}' not found") from None
    return Response(status=200)


def _parse(name: str, message: str) -> ModelName:
    try:
        return ModelName.parse(name)
    except InvalidName:
        raise bad_request(message) from None


def _details(store: Store, manifest: mf.Manifest) -> dict:
    """Format, family and sizes from the config blob, as /api/tags and /api/show report them."""
    try:
        config = json.loads(store.read_blob(manifest.config.digest))
    except (StoreError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    return {"parent_model": "", "format": config.get("model_format", "gguf"), "family": config.get("model_family", ""),
            "families": config.get("model_families"), "parameter_size": config.get("model_type", ""),
            "quantization_level": config.get("file_type", "")}


def _modelfile(record: ModelRecord, system: str, params: dict, licenses: list[str]) -> str:
    """Ollama's `show --modelfile`, except that FROM and ADAPTER name their blobs as ``@sha256:<hex>`` (which
    /api/create accepts back) where Ollama writes the blob's path: no response reveals where the store lives."""
    manifest = record.manifest
    parsed = modelfile.Modelfile(
        from_="@" + manifest.layer(mf.MEDIA_MODEL).digest, template=record.template, system=system or None,
        parameters=[(k, _go_text(v)) for k, v in _param_items(params)],
        adapters=["@" + layer.digest for layer in manifest.layers_of(mf.MEDIA_ADAPTER)],
        licenses=licenses, messages=[(m.get("role", ""), m.get("content", "")) for m in record.messages])
    header = ("# Modelfile generated by \"ollama show\"\n# To build a new Modelfile based on this, replace FROM with:\n"
              f"# FROM {record.name.display}\n\n")
    return header + modelfile.format(parsed)


def _param_items(params: dict) -> list[tuple[str, Any]]:
    """(name, value) pairs in name order, one per element of a list value (stop)."""
    return [(k, x) for k, v in sorted(params.items()) for x in (v if isinstance(v, list) else [v])]


def _go_text(value: Any, quoted: bool = False) -> str:
    """Go's %v (Modelfile) or %#v (parameters) of a JSON-decoded value: 0.7, 4096, 1e+06, true, "text"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        d = Decimal(repr(float(value))).normalize()
        if -4 <= d.adjusted() < 6:                   # strconv 'g', shortest: exponent from 1e+06 on
            return format(d, "f")
        digits = "".join(map(str, d.as_tuple().digits))
        mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
        return f"{'-' if d < 0 else ''}{mantissa}e{'+' if d.adjusted() >= 0 else '-'}{abs(d.adjusted()):02d}"
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if quoted else text


def _capabilities(info: dict, template_text: str | None) -> list[str]:
    arch = info.get("general.architecture", "")
    caps = ["embedding" if f"{arch}.pooling_type" in info else "completion"]
    try:
        template = load_template(template_text) if template_text else None
    except TemplateError:
        template = None
    return caps + [cap for cap, name in (("tools", "Tools"), ("insert", "Suffix"))
                   if template is not None and template.references(name)]


def _model_info(record: ModelRecord, verbose: bool) -> dict:
    digest = record.manifest.layer(mf.MEDIA_MODEL).digest
    return _read_info(record.model_path, True) if verbose else _brief_info(digest, record.model_path)


@lru_cache(maxsize=32)
def _brief_info(digest: str, path: Path) -> dict:
    """Cached per model blob digest (blobs never change); callers must not modify the result."""
    return _read_info(path, False)


def _read_info(path: Path, verbose: bool) -> dict:
    """GGUF metadata as JSON values plus general.parameter_count; {} (never missing) for an unreadable file."""
    try:
        with GGUFFile(path) as gguf:
            info = {k: _json_value(v, verbose) for k, v in gguf.metadata.items() if k not in HIDDEN_INFO}
            info["general.parameter_count"] = sum(math.prod(t.ne) for t in gguf.tensors.values())
    except (GGUFError, OSError):
        return {}
    return dict(sorted(info.items()))


def _json_value(value: Any, verbose: bool) -> Any:
    if isinstance(value, np.ndarray | list | tuple):
        items = value.tolist() if isinstance(value, np.ndarray) else list(value)
        return items if verbose or len(items) <= MAX_BRIEF_ARRAY else []
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
