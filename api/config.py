"""Settings from the environment: the only module that reads os.environ."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_HOST = "127.0.0.1:11434"   # Ollama's port, so clients need no change
DEFAULT_MODEL = "smollm2:135m"


@dataclass(frozen=True)
class Settings:
    host: str = DEFAULT_HOST
    models_dir: Path = Path.home() / ".pollama" / "models"
    cache_dir: Path = Path.home() / ".cache" / "pollama" / "models"   # downloaded wheels and model files
    keep_alive: str = "5m"
    num_threads: int = 0                  # 0 = choose automatically
    num_parallel: int = 4                 # sequences decoded together per model
    max_queue: int = 512                  # waiting requests in total before 503
    max_loaded_models: int = 3
    default_model: str | None = DEFAULT_MODEL   # imported at start when missing; None turns that off
    import_models: tuple[str, ...] = ()         # more PyPI-shipped models imported at start when missing
    origins: tuple[str, ...] = ()               # browser origins allowed beyond the local ones (api.guard)
    api_key: str | None = None                  # required as a bearer token when set; needed off loopback

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        s = cls()
        fetch_default = env.get("POLLAMA_NO_DEFAULT_MODEL", "").lower() not in ("1", "true", "yes")
        return replace(
            s,
            host=env.get("POLLAMA_HOST", s.host),
            models_dir=Path(env["POLLAMA_MODELS"]).expanduser() if env.get("POLLAMA_MODELS") else s.models_dir,
            cache_dir=Path(env["POLLAMA_CACHE"]).expanduser() if env.get("POLLAMA_CACHE") else s.cache_dir,
            keep_alive=env.get("POLLAMA_KEEP_ALIVE", s.keep_alive),
            num_threads=_int(env, "POLLAMA_NUM_THREADS", s.num_threads),
            num_parallel=_int(env, "POLLAMA_NUM_PARALLEL", s.num_parallel),
            max_queue=_int(env, "POLLAMA_MAX_QUEUE", s.max_queue),
            max_loaded_models=_int(env, "POLLAMA_MAX_LOADED_MODELS", s.max_loaded_models),
            default_model=s.default_model if fetch_default else None,
            import_models=_list(env, "POLLAMA_IMPORT_MODELS"),
            origins=_list(env, "POLLAMA_ORIGINS"),
            api_key=env.get("POLLAMA_API_KEY", "").strip() or None,
        )

    @property
    def bind(self) -> tuple[str, int]:
        """(address, port) from host, accepting "host", "host:port", ":port" and an http:// prefix."""
        host = self.host.split("://", 1)[-1].rstrip("/")
        addr, sep, port = host.rpartition(":")
        if not sep or not port.isdigit():
            return host or "127.0.0.1", 11434
        return (addr.strip("[]") or "127.0.0.1"), int(port)


def _list(env, key: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(key, "").split(",") if item.strip())


def _int(env, key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from None
