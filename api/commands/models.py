"""`pollama list`, `show`, `cp`, `rm`, `ps` and `stop`, printed in Ollama's layout."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TextIO

from api.client import Client, ResponseError
from api.commands.display import TABLE_GAP, human_bytes, human_number, human_time, parse_time, table

SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


def list_models(client: Client, prefix: str | None = None) -> int:
    rows = [[m.get("name") or m.get("model", ""), _short_id(m.get("digest", "")), human_bytes(int(m.get("size", 0))),
             human_time(parse_time(m.get("modified_at")), "Never")]
            for m in client.list() if not prefix or (m.get("name") or m.get("model", "")).startswith(prefix)]
    sys.stdout.write(table(["NAME", "ID", "SIZE", "MODIFIED"], rows))
    return 0


def ps(client: Client, prefix: str | None = None) -> int:
    now = datetime.now(UTC)
    rows = [[m.get("name") or m.get("model", ""), _short_id(m.get("digest", "")), human_bytes(int(m.get("size", 0))),
             processor(int(m.get("size", 0)), int(m.get("size_vram", 0))), _until(m.get("expires_at"), now)]
            for m in client.ps() if not prefix or (m.get("name") or m.get("model", "")).startswith(prefix)]
    sys.stdout.write(table(["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"], rows))
    return 0


def processor(size: int, size_vram: int) -> str:
    """Where the weights live, from the share of them in VRAM (ours are always on the CPU: size_vram 0)."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def _until(expires_at: str | None, now: datetime) -> str:
    when = parse_time(expires_at)
    if when is not None and when < now:
        return "Stopping..."
    return human_time(when, "Never", now)


def _short_id(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def show(client: Client, model: str, field: str | None = None) -> int:
    """Print one field of /api/show (--modelfile, --template, …) or the summary ``show_info`` gives."""
    resp = client.show(model)
    if field is None:
        show_info(resp, sys.stdout)
    else:
        print(resp.get(field, ""))
    return 0


def show_info(resp: dict, out: TextIO) -> None:
    """The sections Ollama's `show` prints: Model, Capabilities, Parameters, System, License."""
    _section(out, "Model", _model_rows(resp))
    if resp.get("capabilities"):
        _section(out, "Capabilities", [[c] for c in resp["capabilities"]])
    params = [line.split(None, 1) for line in (resp.get("parameters") or "").splitlines() if line.strip()]
    if params:
        _section(out, "Parameters", [[p[0], p[1].strip() if len(p) > 1 else ""] for p in params])
    for title, key in (("System", "system"), ("License", "license")):
        if resp.get(key):
            _section(out, title, [[line] for line in _two_lines(resp[key])])


def _model_rows(resp: dict) -> list[list[str]]:
    info, details = resp.get("model_info") or {}, resp.get("details") or {}
    arch = info.get("general.architecture") or details.get("family", "")
    count = info.get("general.parameter_count")
    rows = [["architecture", arch],
            ["parameters", human_number(int(count)) if count else details.get("parameter_size", "")]]
    for label, key in (("context length", "context_length"), ("embedding length", "embedding_length")):
        value = info.get(f"{arch}.{key}")
        if value is not None:
            rows.append([label, str(value)])
    rows.append(["quantization", details.get("quantization_level", "")])
    return rows


def _section(out: TextIO, title: str, rows: list[list[str]]) -> None:
    """A titled block of rows indented as Ollama's (two spaces for the title, four for the rows)."""
    out.write(f"  {title}\n")
    width = max(len(r[0]) for r in rows)
    for r in rows:
        cells = [r[0].ljust(width) if len(r) > 1 else r[0], *r[1:]]
        out.write((TABLE_GAP + TABLE_GAP.join(cells)).rstrip() + "\n")
    out.write("\n")


def _two_lines(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[:2] + (["..."] if len(lines) > 2 else [])


def copy(client: Client, source: str, destination: str) -> int:
    client.copy(source, destination)
    print(f"copied '{source}' to '{destination}'")
    return 0


def remove(client: Client, models: list[str]) -> int:
    """Delete each model, unloading it first so its memory is freed too."""
    for name in models:
        _unload_quietly(client, name)
        client.delete(name)
        print(f"deleted '{name}'")
    return 0


def _unload_quietly(client: Client, name: str) -> None:
    try:
        client.unload(name)
    except ResponseError:
        pass      # not loaded, not a generative model, or absent: delete reports what matters


def stop(client: Client, model: str) -> int:
    try:
        client.unload(model)
    except ResponseError as exc:
        if exc.status == 404:
            raise ResponseError(404, f'couldn\'t find model "{model}" to stop') from None
        raise
    return 0
