"""POST /api/create: both request forms → a validated plan → layers and a manifest in the store.

Forms: the current one (``from``, ``files``, ``adapters``, ``template``, ``system``, ``license``, ``parameters``,
``messages``, ``quantize``) and the pre-v0.5.5 one (``modelfile`` text, whose FROM/ADAPTER may be ``@sha256:…``
blobs or names of ``files`` the client uploaded). Everything that can be checked without writing is checked in
``prepare``, so a bad request gets a real 400 before any streamed output; ``run`` then writes and reports.

A server file path (the old ``path`` field, or FROM/ADAPTER spelled as a path) is refused with one fixed message
decided from the string alone: the server never opens it, so the answer cannot reveal whether it exists
(CVE-2024-39719) and cannot block on a device (CVE-2024-39721). A request with both ``path`` and ``modelfile`` (the
seed document's own example) uses the Modelfile text, as Ollama did, and leaves the path alone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api import options, prompt
from api.chat_prompt import parse_messages
from api.errors import APIError, bad_request, not_found
from api.gguf_import import config_blob, gguf_facts
from api.model_pool import ModelRecord, read_record
from api.schemas import field as body_field
from api.schemas import model_field
from engine.convert import QUANT_TYPES, ConvertError, convert_safetensors
from engine.gguf import GGUF_MAGIC, GGUFError
from registry import chat_templates
from registry import manifest as mf
from registry import modelfile as mfile
from registry.errors import BlobNotFound, InsufficientStorage, InvalidDigest, InvalidName, ModelNotFound, StoreError
from registry.fsutil import TMP_PREFIX
from registry.names import ModelName
from registry.store import Store

SERVER_PATH_REFUSED = ("reading files on the server is not supported: upload them with POST /api/blobs/<digest> "
                       "and refer to them by digest")
PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")
_BOOLS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}   # Go's ParseBool
_KIND_NAMES = {int: "int", float: "float", bool: "bool"}
Source = tuple[str, dict[str, str]]     # (installed model name, {}) or ("", {uploaded file name: digest})


@dataclass
class Plan:
    """A create request, validated: what the new model is made of."""

    name: ModelName
    base: ModelRecord | None = None          # FROM an installed model: its layers are inherited
    gguf: str | None = None                  # digest of an uploaded GGUF model file
    facts: dict = field(default_factory=dict)     # gguf_facts of that file
    safetensors: dict[str, str] = field(default_factory=dict)   # file name → digest, converted in run()
    adapters: list[str] = field(default_factory=list)
    template: str | None = None
    system: str | None = None
    licenses: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)
    quantize: str | None = None


def store_error(exc: StoreError) -> APIError:
    """Store failures as HTTP errors: missing → 404, disk full → 507, anything else (digest, name, mismatch) → 400."""
    if isinstance(exc, ModelNotFound | BlobNotFound):
        return APIError(404, str(exc))
    if isinstance(exc, InsufficientStorage):
        return APIError(507, str(exc))
    return APIError(400, str(exc))


def prepare(store: Store, body: dict) -> Plan:
    """Validate a create request (either form) into a Plan; APIError on anything wrong."""
    try:
        name = ModelName.parse(model_field(body))
    except InvalidName:
        raise bad_request("invalid model name") from None
    files = _uploads(store, body_field(body, "files", dict, {}))
    adapters = _uploads(store, body_field(body, "adapters", dict, {}))
    text, path = body_field(body, "modelfile", str, ""), body_field(body, "path", str, "")
    if text or path:
        plan, source = _from_modelfile(name, text, files, adapters)
    else:
        plan, source = _from_fields(name, body, files, adapters)
    _resolve(store, plan, *source)
    return plan


def _from_fields(name: ModelName, body: dict, files: dict[str, str], adapters: dict[str, str]) -> tuple[Plan, Source]:
    source = body_field(body, "from", str, "")
    if not source and not files:
        raise bad_request("neither 'from' or 'files' was specified")
    licenses = body.get("license")
    licenses = [licenses] if isinstance(licenses, str) else licenses or []
    if not isinstance(licenses, list) or not all(isinstance(x, str) for x in licenses):
        raise bad_request("invalid type for field \"license\": expected a string or an array of strings")
    params = {k: _typed_param(k, v) for k, v in body_field(body, "parameters", dict, {}).items()}
    plan = Plan(name, adapters=list(adapters.values()), template=body_field(body, "template", str, "") or None,
                system=body_field(body, "system", str, "") or None, licenses=licenses,
                params={k: v for k, v in params.items() if v is not None},
                messages=[{"role": m["role"], "content": m["content"]} for m in parse_messages(body.get("messages"))],
                quantize=body_field(body, "quantize", str, "") or body_field(body, "quantization", str, "") or None)
    return plan, (_source(source, files) if source else ("", files))


def _from_modelfile(name: ModelName, text: str, files: dict[str, str],
                    adapters: dict[str, str]) -> tuple[Plan, Source]:
    if not text:
        raise bad_request(SERVER_PATH_REFUSED)          # a Modelfile on the server: never read, whatever path
    try:
        parsed = mfile.parse(text)
    except mfile.ModelfileError as exc:
        raise bad_request(str(exc)) from None
    params: dict[str, Any] = {}
    for pname, raw in parsed.parameters:
        value = _text_param(pname, raw)
        params[pname] = params.get(pname, []) + value if pname == "stop" else value
    uploads = {**files, **adapters}
    plan = Plan(name, adapters=[_adapter(a, uploads) for a in parsed.adapters], template=parsed.template or None,
                system=parsed.system or None, licenses=list(parsed.licenses),
                params={k: v for k, v in params.items() if v is not None},
                messages=[{"role": r, "content": c} for r, c in parsed.messages])
    return plan, _source(parsed.from_, files)


def _source(value: str, files: dict[str, str]) -> Source:
    """FROM as an installed model's name, or an upload: an ``@sha256:`` blob or a file name from ``files``."""
    if value.startswith("@"):
        return "", {"model.gguf": _digest(value[1:])}
    if value in files:
        return "", {value: files[value]}
    if _looks_like_path(value):
        raise bad_request(SERVER_PATH_REFUSED)
    return value, {}


def _adapter(value: str, uploads: dict[str, str]) -> str:
    if value.startswith("@"):
        return _digest(value[1:])
    if value in uploads:
        return uploads[value]
    raise bad_request(SERVER_PATH_REFUSED)


def _looks_like_path(value: str) -> bool:
    return value.startswith(PATH_PREFIXES) or ".." in value or "\\" in value or value.lower().endswith(
        (".gguf", ".safetensors", ".bin"))


def _uploads(store: Store, files: dict) -> dict[str, str]:
    """{file name: digest} of blobs the client uploaded. Names are relative paths as Go's fs.ValidPath has them
    ("1_Pooling/config.json" is how a sentence-transformers folder arrives): no leading "/", no "", "." or ".."
    element, and no backslash or NUL either, so every name stays inside the folder it is materialised in."""
    out = {}
    for name, digest in files.items():
        if not name or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in name.split("/")):
            raise bad_request("file path must be relative")
        out[name] = _digest(digest)
        if not store.has_blob(out[name]):
            raise bad_request(f"blob \"{out[name]}\" not found: upload it with POST /api/blobs/{out[name]}")
    return out


def _digest(value: Any) -> str:
    try:
        return mf.normalize_digest(value)
    except InvalidDigest:
        raise bad_request("invalid digest format") from None


def _typed_param(name: str, value: Any) -> Any:
    if name not in options.OPTIONS:
        raise bad_request(f"unknown parameter '{name}'")
    return options.coerce(name, value)


def _text_param(name: str, raw: str) -> Any:
    """A Modelfile PARAMETER's text, typed by the option table (Ollama's FormatParams)."""
    opt = options.OPTIONS.get(name)
    if opt is None:
        raise bad_request(f"unknown parameter '{name}'")
    try:
        value = _parse_text(opt.kind, raw)
    except ValueError:
        raise bad_request(f"invalid {_KIND_NAMES.get(opt.kind, 'string')} value [{raw}]") from None
    return options.coerce(name, value)


def _parse_text(kind: type, raw: str) -> Any:
    if kind is bool:
        if raw.lower() not in _BOOLS:
            raise ValueError(raw)
        return _BOOLS[raw.lower()]
    if kind in (int, float):
        return kind(raw)
    return [raw] if kind is list else raw


def _resolve(store: Store, plan: Plan, base_name: str, files: dict[str, str]) -> None:
    """Check everything the model will be made of, and find its source: an installed model or uploaded files."""
    if plan.template is not None:
        prompt.parse_template(plan.template)                  # "template error: …" as a 400 now
    for digest in plan.adapters:
        _check_gguf(store, digest)
    if base_name:
        plan.base = _installed(store, base_name)
    elif any(n.endswith(".safetensors") for n in files):
        plan.safetensors = files
    else:
        plan.gguf = _model_gguf(store, files)
        plan.facts = _check_gguf(store, plan.gguf)
    if plan.quantize and not plan.safetensors:
        raise bad_request("quantization is not supported yet")
    if plan.quantize and plan.quantize.lower() not in QUANT_TYPES:
        raise bad_request(f"unsupported quantization type {plan.quantize} (supported: {', '.join(QUANT_TYPES)})")


def _installed(store: Store, name: str) -> ModelRecord:
    try:
        return read_record(store, ModelName.parse(name))
    except InvalidName:
        raise bad_request(f"invalid model name {json.dumps(name)} in FROM") from None
    except ModelNotFound:
        raise not_found(f"model '{name}' not found") from None


def _model_gguf(store: Store, files: dict[str, str]) -> str:
    ggufs = [d for n, d in files.items() if n.lower().endswith(".gguf") or _has_gguf_magic(store, d)]
    if not ggufs:
        raise bad_request("unknown model file type: expected a GGUF file or safetensors weights")
    if len(set(ggufs)) > 1:
        raise bad_request("only one GGUF model file is supported")
    return ggufs[0]


def _has_gguf_magic(store: Store, digest: str) -> bool:
    with open(store.blob_path(digest), "rb") as f:
        return f.read(len(GGUF_MAGIC)) == GGUF_MAGIC


def _check_gguf(store: Store, digest: str) -> dict:
    """The GGUF's config facts; 400 with the parser's message when the blob is not a well-formed GGUF."""
    if not store.has_blob(digest):
        raise bad_request(f"blob \"{digest}\" not found: upload it with POST /api/blobs/{digest}")
    try:
        return gguf_facts(store.blob_path(digest))
    except (GGUFError, ValueError, TypeError) as exc:
        raise bad_request(f"invalid GGUF file {digest}: {exc}") from None


def run(store: Store, plan: Plan) -> Iterator[str]:
    """Build the model; yields Ollama's status texts, ending with "success". Errors are APIErrors."""
    try:
        if plan.safetensors:
            yield "converting model"
            plan.gguf = _convert(store, plan.safetensors, plan.quantize)
            plan.facts = _check_gguf(store, plan.gguf)
        if plan.base is None:
            yield "parsing GGUF"
            jinja = plan.facts.get("chat_template")
            detected = chat_templates.detect(jinja) if jinja and not plan.template else None
            if detected is not None:
                yield f"using autodetected template {detected.name}"
                plan.template, plan.params = detected.template, {**detected.params, **plan.params}
            elif jinja and not plan.template:
                plan.template = jinja                     # no known match: the GGUF's Jinja, rendered sandboxed
        known = _known_digests(plan)
        store.create_model(plan.name, **_layers(store, plan))
        manifest, _ = store.read_manifest(plan.name)
        for layer in manifest.layers:
            verb = "using existing" if layer.digest in known else "creating new"
            yield f"{verb} layer {layer.digest}"
        yield "writing manifest"
        yield "success"
    except StoreError as exc:
        raise store_error(exc) from None


def _known_digests(plan: Plan) -> set[str]:
    digests = set(plan.adapters) | ({plan.gguf} if plan.gguf else set())
    return digests | (plan.base.manifest.digests() if plan.base else set())


def _layers(store: Store, plan: Plan) -> dict[str, Any]:
    """create_model arguments; a base model's layers are inherited, the request's values override them."""
    base = plan.base
    if base is None:
        return {"model_blob": plan.gguf, "config": config_blob(plan.facts, [plan.gguf]), "template": plan.template,
                "system": plan.system, "params": plan.params, "license": plan.licenses,
                "messages": plan.messages, "adapters": plan.adapters}
    config = _base_config(store, base)
    licenses = [store.read_blob(x.digest).decode("utf-8", "replace") for x in base.manifest.layers_of(mf.MEDIA_LICENSE)]
    return {"model_blob": base.manifest.layer(mf.MEDIA_MODEL).digest,
            "config": config,
            "template": plan.template or base.template, "system": plan.system or base.system,
            "params": {**base.params, **plan.params}, "license": licenses + plan.licenses,
            "messages": plan.messages or base.messages,
            "adapters": [x.digest for x in base.manifest.layers_of(mf.MEDIA_ADAPTER)] + plan.adapters,
            "extra_layers": base.manifest.layers_of(mf.MEDIA_PROJECTOR)}


def _base_config(store: Store, base: ModelRecord) -> dict:
    try:
        config = json.loads(store.read_blob(base.manifest.config.digest))
    except ValueError:
        config = {}
    return {k: v for k, v in config.items() if k != "rootfs"} if isinstance(config, dict) else {}


def _convert(store: Store, files: dict[str, str], quantize: str | None) -> str:
    """Convert uploaded safetensors files to a GGUF blob; the inputs are hard links in a private temp folder."""
    work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}create-", dir=store.root))
    try:
        source = work / "model"
        for name, digest in files.items():
            _materialise(store.blob_path(digest), source / name)
        try:
            out = convert_safetensors(source, work / "model.gguf", quantize.lower() if quantize else None)
        except ConvertError as exc:
            raise bad_request(f"converting model: {exc}") from None
        return store.import_file(out)[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _materialise(blob: Path, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(blob, target)
    except (FileExistsError, NotADirectoryError):
        raise bad_request(f"file names conflict: {target.name} is both a file and a folder") from None
    except OSError:
        shutil.copyfile(blob, target)             # another filesystem (or no hard links): copy instead
