"""Image manifests (Docker v2 schema 2, as Ollama uses them), layers, digests, and Go-compatible JSON.

A manifest names a config blob and an ordered list of layer blobs by digest::

    {"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
     "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:…","size":483},
     "layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:…","size":1678447520}, …]}

Digests are validated when a manifest is parsed, before any of them can become a path: the root cause of
CVE-2024-37032 was a layer digest joined into a blob path unchecked.

``go_json`` reproduces Go's ``json.Encoder`` output (compact, ``<``/``>``/``&`` escaped, trailing newline),
so the small blobs and manifests we write hash the same as the ones Ollama writes for the same content.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from registry.errors import InvalidDigest, InvalidManifest

__all__ = [
    "InvalidDigest", "InvalidManifest", "Layer", "Manifest", "check_digest", "normalize_digest", "go_json",
    "MEDIA_MODEL", "MEDIA_TEMPLATE", "MEDIA_SYSTEM", "MEDIA_PARAMS", "MEDIA_LICENSE", "MEDIA_ADAPTER",
    "MEDIA_MESSAGES", "MEDIA_PROJECTOR", "MEDIA_PROMPT", "MEDIA_CONFIG", "MEDIA_MANIFEST",
]

MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_PROMPT = "application/vnd.ollama.image.prompt"          # legacy name of the template layer
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_MANIFEST_LIST = "application/vnd.ollama.manifest.list.v2+json"

MAX_MANIFEST_BYTES = 4 << 20        # real manifests are < 1 KiB; tensor-per-layer ones stay below 1 MiB
_MAX_SIZE = (1 << 63) - 1           # Go's int64
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_LOOSE_DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")


def check_digest(d: str) -> str:
    """Return ``d`` if it is exactly ``sha256:`` + 64 lowercase hex digits, else raise InvalidDigest."""
    if isinstance(d, str) and _DIGEST_RE.fullmatch(d):
        return d
    raise InvalidDigest("invalid digest format")


def normalize_digest(d: str) -> str:
    """Canonicalise the digest forms Ollama's blob routes accept (``sha256:``/``sha256-``, any hex case)."""
    m = _LOOSE_DIGEST_RE.fullmatch(d) if isinstance(d, str) else None
    if m is None:
        raise InvalidDigest("invalid digest format")
    return "sha256:" + m.group(1).lower()


@dataclass(frozen=True)
class Layer:
    """One blob reference. ``from_`` (JSON ``from``) names the model a layer was inherited from;
    ``name`` labels tensor/config layers of newer safetensors models."""

    media_type: str
    digest: str
    size: int
    from_: str | None = None
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Field order and omitempty behaviour of Ollama's ``manifest.Layer``."""
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.from_:
            d["from"] = self.from_
        if self.name:
            d["name"] = self.name
        return d

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Layer:
        if not isinstance(obj, dict):
            raise InvalidManifest(f"{where} is not an object")
        size = obj.get("size", 0)
        if type(size) is not int or not 0 <= size <= _MAX_SIZE:
            raise InvalidManifest(f"{where} has an invalid size")
        try:
            digest = check_digest(obj.get("digest"))
        except InvalidDigest:
            raise InvalidManifest(f"{where} has an invalid digest") from None
        return cls(_opt_str(obj, "mediaType", where) or "", digest, size,
                   _opt_str(obj, "from", where), _opt_str(obj, "name", where))


@dataclass(frozen=True)
class Manifest:
    config: Layer
    layers: tuple[Layer, ...]
    schema_version: int = 2
    media_type: str = MEDIA_MANIFEST

    @classmethod
    def from_bytes(cls, data: bytes, max_bytes: int = MAX_MANIFEST_BYTES) -> Manifest:
        """Parse and validate; raises InvalidManifest (never anything else) on malformed input."""
        if len(data) > max_bytes:
            raise InvalidManifest("manifest too large")
        obj = _load_json(data)
        if not isinstance(obj, dict):
            raise InvalidManifest("manifest is not a JSON object")
        media_type = _opt_str(obj, "mediaType", "manifest") or MEDIA_MANIFEST
        if media_type == MEDIA_MANIFEST_LIST:
            raise InvalidManifest("manifest lists are not supported")
        version = obj.get("schemaVersion", 2)
        if type(version) is not int:
            raise InvalidManifest("schemaVersion is not an integer")
        raw_layers = obj.get("layers")
        raw_layers = [] if raw_layers is None else raw_layers      # Go decodes null as an empty slice
        if not isinstance(raw_layers, list):
            raise InvalidManifest("layers is not a list")
        if "config" not in obj:
            raise InvalidManifest("manifest has no config")
        config = Layer.from_json(obj["config"], "config")
        layers = tuple(Layer.from_json(x, f"layer {i}") for i, x in enumerate(raw_layers))
        return cls(config, layers, version, media_type)

    def to_bytes(self) -> bytes:
        """Compact JSON plus newline, keys in the order Ollama's ``WriteManifest`` produces."""
        return go_json({
            "schemaVersion": self.schema_version,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        })

    def layer(self, media_type: str) -> Layer | None:
        """The first layer of ``media_type``, or None."""
        return next((x for x in self.layers if x.media_type == media_type), None)

    def layers_of(self, media_type: str) -> list[Layer]:
        return [x for x in self.layers if x.media_type == media_type]

    def digests(self) -> set[str]:
        """Every blob this manifest keeps alive: the config and all layers."""
        return {self.config.digest, *(x.digest for x in self.layers)}

    @property
    def total_size(self) -> int:
        """Config plus layer sizes: what ``/api/tags`` reports as ``size``."""
        return self.config.size + sum(x.size for x in self.layers)


def go_json(obj: Any, *, sort_keys: bool = False) -> bytes:
    """Encode like Go's ``json.NewEncoder(w).Encode(v)``: compact, HTML-safe escapes, ``"\\n"`` at the end.

    Go sorts map keys but keeps struct field order, so pass ``sort_keys=True`` for values that are Go maps
    (the params layer) and False for structs (manifests, messages, config; give keys in struct order).
    """
    return (_go_value(obj, sort_keys) + "\n").encode("utf-8")


def _go_value(v: Any, sort_keys: bool) -> str:
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, str):
        return _go_string(v)
    if isinstance(v, dict):
        items = sorted(v.items()) if sort_keys else v.items()
        return "{" + ",".join(f"{_go_string(str(k))}:{_go_value(x, sort_keys)}" for k, x in items) + "}"
    if isinstance(v, list | tuple):
        return "[" + ",".join(_go_value(x, sort_keys) for x in v) + "]"
    raise TypeError(f"cannot encode {type(v).__name__} as JSON")


def _go_float(f: float) -> str:
    """Go's float64 encoding: shortest repr, integers without ``.0``, exponent without zero padding."""
    if not math.isfinite(f):
        raise ValueError(f"unsupported float value {f!r}")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    if 1e-6 <= abs(f) < 1e21:                           # Go's range for plain (non-exponent) notation
        return format(Decimal(repr(f)), "f").removesuffix(".0")
    return re.sub(r"e([+-])0(\d)$", r"e\1\2", repr(f))


def _go_string(s: str) -> str:
    # Go writes non-ASCII as UTF-8, escapes <, >, & and U+2028/9, and replaces invalid UTF-16 (lone
    # surrogates in Python) with U+FFFD.
    out = json.dumps(s, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        out = out.replace(ch, esc)
    return re.sub("[\ud800-\udfff]", "\ufffd", out)


def _load_json(data: bytes) -> Any:
    def reject(token: str) -> None:
        raise ValueError(f"invalid JSON constant {token}")

    try:
        return json.loads(bytes(data).decode("utf-8"), parse_constant=reject)
    except (ValueError, RecursionError):
        raise InvalidManifest("manifest is not valid JSON") from None


def _opt_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidManifest(f"{where} field {key} is not a string")
    return value
