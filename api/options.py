"""The one table of runtime options: name → type, default, and where it goes (sampling, limits, load).

Merge order as Ollama: defaults, then the model's params layer, then the request's options. Unknown keys are ignored,
null means "not set", a wrong type or an out-of-range value is a 400 naming the option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from api.errors import bad_request
from engine.generate import Limits
from engine.sampling import SamplingOptions

MAX_NUM_CTX = 1 << 17      # a context size beyond this is refused rather than allocated
MIN_NUM_CTX = 4            # smaller ones are raised to it, as Ollama's scheduler does (a prompt needs room left)


@dataclass(frozen=True)
class Option:
    name: str
    kind: type                   # int, float, bool, list (of str)
    target: str                  # "sampling" | "limits" | "load" | "ignored"
    low: float = -math.inf
    high: float = math.inf


OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("temperature", float, "sampling", 0.0),
    Option("top_k", int, "sampling", 0),
    Option("top_p", float, "sampling", 0.0, 1.0),
    Option("min_p", float, "sampling", 0.0, 1.0),
    Option("typical_p", float, "sampling", 0.0, 1.0),
    Option("tfs_z", float, "sampling", 0.0),
    Option("repeat_last_n", int, "sampling", -1),
    Option("repeat_penalty", float, "sampling", 0.0),
    Option("presence_penalty", float, "sampling"),
    Option("frequency_penalty", float, "sampling"),
    Option("penalize_newline", bool, "sampling"),
    Option("mirostat", int, "sampling", 0, 2),
    Option("mirostat_tau", float, "sampling", 0.0),
    Option("mirostat_eta", float, "sampling", 0.0),
    Option("seed", int, "sampling"),
    Option("num_predict", int, "limits", -2),
    Option("stop", list, "limits"),
    Option("num_ctx", int, "limits", 1, MAX_NUM_CTX),
    Option("num_keep", int, "limits", -1),
    Option("num_batch", int, "limits", 1, 8192),
    Option("num_thread", int, "load", 0, 1024),
    Option("grammar", str, "constraint"),          # GBNF or Lark text constraining the output (when no format)
    *(Option(name, object, "ignored") for name in (
        "num_gpu", "main_gpu", "use_mmap", "use_mlock", "numa", "low_vram", "f16_kv", "logits_all", "vocab_only",
        "embedding_only", "num_gqa", "rope_frequency_base", "rope_frequency_scale", "draft_num_predict")),
)}


@dataclass(frozen=True)
class RunOptions:
    sampling: SamplingOptions
    limits: Limits
    num_thread: int = 0
    grammar: str | None = None


def coerce(name: str, value: Any) -> Any:
    """The typed value of one option; APIError(400) naming the option on a wrong type or range. None = unset."""
    opt = OPTIONS.get(name)
    if opt is None or value is None or opt.kind is object:
        return None
    typed = _typed(opt, value)
    if opt.kind in (int, float) and not opt.low <= typed <= opt.high:
        raise bad_request(f"option \"{name}\" out of range: {value!r}")
    return typed


def merge(*layers: dict | None) -> dict[str, Any]:
    """Typed options from several layers (model params first, request last); later layers win."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, dict):
            raise bad_request("options must be an object")
        for name, value in layer.items():
            typed = coerce(name, value)
            if typed is not None:
                merged[name] = typed
    return merged


def build(merged: dict[str, Any], default_ctx: int = 2048) -> RunOptions:
    sampling_names = {f.name for f in fields(SamplingOptions)}
    sampling = SamplingOptions(**{k: v for k, v in merged.items() if k in sampling_names})
    limit_names = {f.name for f in fields(Limits)}
    limits = {k: v for k, v in merged.items() if k in limit_names}
    limits["num_ctx"] = max(MIN_NUM_CTX, limits.get("num_ctx", default_ctx))
    if "stop" in limits:
        limits["stop"] = tuple(s for s in limits["stop"] if s)
    if limits.get("num_keep", 0) < 0:
        limits["num_keep"] = limits["num_ctx"]    # negative keeps the whole prompt
    return RunOptions(sampling, Limits(**limits), merged.get("num_thread", 0), merged.get("grammar"))


def _typed(opt: Option, value: Any) -> Any:
    if opt.kind is bool:
        if not isinstance(value, bool):
            raise bad_request(f"option \"{opt.name}\" must be of type boolean")
        return value
    if opt.kind is str:
        if not isinstance(value, str):
            raise bad_request(f"option \"{opt.name}\" must be of type string")
        return value
    if opt.kind is list:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise bad_request(f"option \"{opt.name}\" must be of type array of strings")
        return list(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"option \"{opt.name}\" must be of type {'integer' if opt.kind is int else 'number'}")
    return int(value) if opt.kind is int else float(value)
