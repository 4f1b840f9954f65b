"""Bundled Ollama templates, and picking one for an imported model from its Hugging Face Jinja template.

``detect`` is Ollama's ``template.Named``: the Levenshtein distance (in code points) from the model's
``tokenizer.chat_template`` to every known Jinja template in ``templates/index.json``; the first entry at the
minimum wins, and only a distance under 100 counts as a match.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
MAX_DISTANCE = 100                 # Ollama accepts a match only below this distance


@dataclass(frozen=True)
class NamedTemplate:
    name: str                                                     # e.g. "chatml"
    template: str                                                 # Go template text (the TEMPLATE layer)
    params: dict[str, Any]                                        # e.g. {"stop": [...]}; a copy per load


@lru_cache(maxsize=1)
def _index() -> dict[str, Any]:
    return json.loads((TEMPLATES_DIR / "index.json").read_text(encoding="utf-8"))


def names() -> list[str]:
    """Names of the bundled templates."""
    return sorted(_index()["params"])


def load(name: str) -> NamedTemplate:
    """A bundled template by name; KeyError for an unknown name."""
    params = _index()["params"][name]
    text = (TEMPLATES_DIR / f"{name}.gotmpl").read_text(encoding="utf-8").replace("\r\n", "\n")
    return NamedTemplate(name, text, copy.deepcopy(params))


def detect(jinja: str) -> NamedTemplate | None:
    """The bundled template whose known Jinja source is nearest to ``jinja``, if under MAX_DISTANCE edits."""
    best_name, best = None, MAX_DISTANCE
    for entry in _index()["jinja"]:
        distance = levenshtein(jinja, entry["template"], cutoff=best)
        if distance < best:
            best_name, best = entry["name"], distance
    return None if best_name is None else load(best_name)


def levenshtein(a: str, b: str, cutoff: int | None = None) -> int:
    """Edit distance in code points; with ``cutoff``, min(distance, cutoff), which allows stopping early.

    Row by row with NumPy: deletions and substitutions vectorise directly; insertions along a row are a
    running minimum, cur[j] = min_k<=j (tmp[k] + j - k), done with ``np.minimum.accumulate``.
    """
    if cutoff is not None and abs(len(a) - len(b)) >= cutoff:
        return cutoff                                              # the length gap alone is too far
    if not a or not b:
        return max(len(a), len(b))                                 # below the cutoff: checked just above
    target = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)    # (m,)
    cols = np.arange(len(b) + 1, dtype=np.int64)                        # (m+1,)
    prev = cols.copy()
    for i, ch in enumerate(a, start=1):
        tmp = np.empty_like(prev)
        tmp[0] = i
        np.minimum(prev[:-1] + (target != ord(ch)), prev[1:] + 1, out=tmp[1:])
        prev = np.minimum.accumulate(tmp - cols) + cols
        if cutoff is not None and prev.min() >= cutoff:
            return cutoff
    return int(prev[-1]) if cutoff is None else min(int(prev[-1]), cutoff)
