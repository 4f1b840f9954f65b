"""`pollama push` and `pollama pull` against a real registry (Debian's docker-registry), and `run` pulling a
missing model first, as Ollama's does."""

from __future__ import annotations

from tests.api.cli.conftest import PROMPT, SHORT, answer, assert_one_line_error, rows


def test_push_then_pull_then_run_pulls_itself(pollama, api, real_registry):
    remote = f"{real_registry.host}/cli/short:v1"
    assert pollama("cp", SHORT, remote).returncode == 0
    model_id = rows(pollama("list").stdout)[remote][0]
    layer = api("POST", "/api/show", {"model": SHORT}).json()["modelfile"].split("@sha256:")[1][:12]

    pushed = pollama("push", remote, "--insecure")
    assert pushed.returncode == 0, pushed.stderr
    lines = pushed.stderr.splitlines()
    assert lines[0] == "retrieving manifest" and lines[-2:] == ["pushing manifest", "success"]
    assert f"pushing {layer} (98 MB)" in lines                     # the model layer, one line off a terminal
    assert "PUT /v2/cli/short/manifests/v1" in real_registry.log()

    assert pollama("rm", remote).returncode == 0
    pulled = pollama("pull", remote, "--insecure")
    assert pulled.returncode == 0, pulled.stderr
    lines = pulled.stderr.splitlines()
    assert lines[0] == "pulling manifest" and f"pulling {layer} (98 MB)" in lines and lines[-1] == "success"
    assert rows(pollama("list").stdout)[remote][0] == model_id      # the very same manifest came back

    assert pollama("rm", remote).returncode == 0
    ran = pollama("run", remote, "--insecure", PROMPT)             # flags and prompt words in any order
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.startswith("pulling manifest\n") and ran.stderr.endswith("success\n")
    assert ran.stdout == answer(api, PROMPT) + "\n\n"
    assert pollama("rm", remote).returncode == 0


def test_pull_of_a_missing_model_is_one_line(pollama, real_registry):
    result = pollama("pull", f"{real_registry.host}/cli/nosuch:v1", "--insecure")
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["pulling manifest", "Error: pull model manifest: file does not exist"]


def test_push_of_a_missing_model_is_one_line(pollama, real_registry):
    assert_one_line_error(pollama("push", f"{real_registry.host}/cli/absent:v1", "--insecure"), "not found")
