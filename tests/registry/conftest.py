"""Real Docker Distribution 2.8 registries for the client tests (Debian packages ``docker-registry`` and
``apache2-utils``), one anonymous and one behind htpasswd Basic auth, each on a free loopback port with its
own storage directory, started once per session."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REGISTRY_BIN = "/usr/bin/docker-registry"
HTPASSWD_BIN = "/usr/bin/htpasswd"
USER, PASSWORD = "tester", "s3cret-pass"


@dataclass(frozen=True)
class RealRegistry:
    host: str               # "127.0.0.1:<port>", as it appears in model names
    log_path: Path          # the registry's stderr: access log lines, for asserting what was sent

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(root: Path, port: int, htpasswd: Path | None) -> str:
    auth = f"auth:\n  htpasswd:\n    realm: basic-realm\n    path: {htpasswd}\n" if htpasswd else ""
    return (f"version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n{auth}")


def _wait_ready(host: str, proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
            return
        except urllib.error.HTTPError as exc:       # 401 from the auth variant: it is up
            if exc.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("docker-registry did not answer /v2/ in time")


def _serve(root: Path, htpasswd: Path | None) -> Iterator[RealRegistry]:
    port = _free_port()
    config = root / "config.yml"
    config.write_text(_config(root, port, htpasswd))
    log_path = root / "registry.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    registry = RealRegistry(f"127.0.0.1:{port}", log_path)
    try:
        _wait_ready(registry.host, proc)
        yield registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def real_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRegistry]:
    """An anonymous registry (push and pull open to everyone)."""
    yield from _serve(tmp_path_factory.mktemp("registry"), None)


@pytest.fixture(scope="session")
def basic_auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRegistry]:
    """A registry that requires HTTP Basic auth as ``USER``/``PASSWORD`` (bcrypt htpasswd)."""
    root = tmp_path_factory.mktemp("registry-auth")
    htpasswd = root / "htpasswd"
    line = subprocess.run([HTPASSWD_BIN, "-Bbn", USER, PASSWORD], check=True, capture_output=True).stdout
    htpasswd.write_bytes(line)
    yield from _serve(root, htpasswd)
