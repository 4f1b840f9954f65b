"""`pollama create NAME -f Modelfile`: parse the Modelfile here, upload the local files it names as blobs, then ask
the server to build the model from digests (Ollama's v0.5.5+ create request)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from api.client import Client, ClientError
from api.commands.params import parameters
from api.commands.progress import byte_bar, show_progress
from registry import modelfile as mf

HASH_CHUNK_BYTES = 1 << 20
PATH_PREFIXES = ("/", "./", "../", "~")     # a FROM/ADAPTER value spelled like this must be a local file
WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin")
MODEL_DIR_PATTERNS = ("*.safetensors", "*.json", "tokenizer.model", "vocab.txt", "merges.txt")


def create(client: Client, name: str, modelfile_path: Path, quantize: str | None = None) -> int:
    parsed = _read_modelfile(modelfile_path)
    body = request_body(client, name, parsed, modelfile_path.resolve().parent)
    if quantize:
        body["quantize"] = quantize
    last = show_progress(client.create(body), "creating")
    if last.get("status") != "success":
        raise ClientError("the server ended the create stream without reporting success")
    return 0


def _read_modelfile(path: Path) -> mf.Modelfile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClientError(f"no Modelfile at {path} (give one with -f)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"cannot read {path}: {exc}") from None
    try:
        return mf.parse(text)
    except mf.ModelfileError as exc:
        raise ClientError(f"{path}: {exc}") from None


def request_body(client: Client, name: str, parsed: mf.Modelfile, base: Path) -> dict[str, Any]:
    """The /api/create body: FROM becomes ``files`` (uploaded digests) when it names local files, else ``from``."""
    body: dict[str, Any] = {"model": name}
    source = _local(parsed.from_, base)
    if source is None:
        body["from"] = parsed.from_
    else:
        body["files"] = upload_files(client, source)
    if parsed.adapters:
        body["adapters"] = {}
        for adapter in parsed.adapters:
            if adapter.startswith("@sha256:"):                     # a blob already on the server (`show` writes these)
                body["adapters"][adapter[1:]] = adapter[1:]
                continue
            path = _local(adapter, base)
            if path is None:
                raise ClientError(f"ADAPTER {adapter}: no such file")
            body["adapters"].update(upload_files(client, path))
    body.update({k: v for k, v in (("template", parsed.template), ("system", parsed.system),
                                   ("requires", parsed.requires), ("renderer", parsed.renderer),
                                   ("parser", parsed.parser)) if v is not None})
    if parsed.licenses:
        body["license"] = list(parsed.licenses)
    if parsed.parameters:
        body["parameters"] = parameters(parsed.parameters)
    if parsed.messages:
        body["messages"] = [{"role": role, "content": content} for role, content in parsed.messages]
    return body


def _local(value: str, base: Path) -> Path | None:
    """The existing local file or folder ``value`` names (relative to the Modelfile); None for a model name."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if path.exists():
        return path
    if value.startswith(PATH_PREFIXES) or value.lower().endswith(WEIGHT_SUFFIXES):
        raise ClientError(f"{value}: no such file")
    return None


def upload_files(client: Client, path: Path) -> dict[str, str]:
    """{file name: digest} after uploading ``path`` (a file, or a model folder's weights/config/tokenizer)."""
    if path.is_dir():
        files = sorted({f for pattern in MODEL_DIR_PATTERNS for f in path.glob(pattern) if f.is_file()})
        if not files:
            raise ClientError(f"{path}: no model files (*.safetensors, *.json, tokenizer files) in this folder")
        return {f.name: upload_blob(client, f) for f in files}
    return {path.name: upload_blob(client, path)}


def upload_blob(client: Client, path: Path) -> str:
    """Hash ``path``, and send it unless the server already holds that blob; return its digest."""
    digest = "sha256:" + file_sha256(path)
    if client.has_blob(digest):
        print(f"using existing blob {digest[:19]} for {path.name}", file=sys.stderr)
        return digest
    with byte_bar(f"copying {path.name}", path.stat().st_size) as bar:
        client.upload_blob(digest, path, bar.update)
    return digest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, byte_bar(f"hashing {path.name}", path.stat().st_size) as bar:
        while chunk := f.read(HASH_CHUNK_BYTES):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()
