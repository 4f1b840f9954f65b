"""`pollama create NAME -f Modelfile`: local files are uploaded as blobs (HEAD, then POST) and named by digest in
/api/create; FROM a model name inherits; --quantize converts a safetensors folder; errors are one line."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from engine.convert import convert_safetensors
from tests.api.cli.conftest import SHORT, assert_one_line_error, rows
from tests.engine.llama_reference import random_llama
from tests.engine.test_convert import CFG, write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random Hugging Face llama folder (safetensors, config, tokenizer)."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama", random_llama(CFG, seed=3))


@pytest.fixture(scope="module")
def tiny_gguf(checkpoint, tmp_path_factory):
    return convert_safetensors(checkpoint, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def blob_digest(path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_create_uploads_a_local_gguf_and_runs_it(pollama, api, tmp_path, tiny_gguf):
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copy(tiny_gguf, folder / "tiny.gguf")
    (folder / "Modelfile").write_text(
        'FROM ./tiny.gguf\nPARAMETER num_predict 3\nSYSTEM """Be brief."""\nLICENSE MIT\n'
        "MESSAGE user hi\nMESSAGE assistant hello\n")
    digest = blob_digest(tiny_gguf)
    assert api("HEAD", f"/api/blobs/{digest}").status_code == 404

    result = pollama("create", "tiny", "-f", str(folder / "Modelfile"), cwd=tmp_path)   # FROM is relative to it
    assert result.returncode == 0, result.stderr
    assert "copying tiny.gguf" in result.stderr
    assert result.stderr.splitlines()[-1] == "success"
    assert api("HEAD", f"/api/blobs/{digest}").status_code == 200

    assert "tiny:latest" in rows(pollama("list").stdout)
    assert pollama("show", "tiny", "--system").stdout == "Be brief.\n"
    assert pollama("show", "tiny", "--license").stdout == "MIT\n"
    assert "num_predict                    3" in pollama("show", "tiny", "--parameters").stdout
    assert api("POST", "/api/show", {"model": "tiny"}).json()["messages"] == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    ran = pollama("run", "tiny", "hello")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.endswith("\n\n")

    again = pollama("create", "tiny2", cwd=folder)             # ./Modelfile by default; the blob is not re-sent
    assert again.returncode == 0, again.stderr
    assert f"using existing blob {digest[:19]} for tiny.gguf" in again.stderr
    assert "copying" not in again.stderr
    assert pollama("rm", "tiny", "tiny2").returncode == 0


def test_create_from_a_model_name_inherits_and_overrides(pollama, tmp_path):
    (tmp_path / "Modelfile").write_text(f"FROM {SHORT}\nPARAMETER temperature 0.5\nPARAMETER stop END\n"
                                        "PARAMETER stop STOP\nSYSTEM You are a pirate.\n")
    result = pollama("create", "pirate", "-f", str(tmp_path / "Modelfile"))
    assert result.returncode == 0, result.stderr
    assert "using existing layer sha256:" in result.stderr and result.stderr.endswith("success\n")
    params = pollama("show", "pirate", "--parameters").stdout.splitlines()
    assert 'stop                           "END"' in params and 'stop                           "STOP"' in params
    assert "temperature                    0.5" in params
    assert "num_predict                    16" in params                  # inherited from short:latest
    assert rows(pollama("list").stdout)["pirate:latest"][0] != rows(pollama("list").stdout)[SHORT][0]
    assert pollama("rm", "pirate").returncode == 0


def test_create_quantizes_a_safetensors_folder(pollama, checkpoint, tmp_path):
    (tmp_path / "Modelfile").write_text(f"FROM {checkpoint}\n")
    result = pollama("create", "tinyq", "-f", str(tmp_path / "Modelfile"), "--quantize", "q4_1")
    assert result.returncode == 0, result.stderr
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert f"copying {name}" in result.stderr
    assert "    quantization        Q4_1" in pollama("show", "tinyq").stdout.splitlines()
    assert pollama("rm", "tinyq").returncode == 0


@pytest.mark.parametrize("modelfile, message", [
    (None, "no Modelfile at"),
    ("FROM short:latest\nPARAMTER x 1\n", '(line 2): command must be one of "from"'),
    ("FROM ./missing.gguf\n", "./missing.gguf: no such file"),
    ("FROM short:latest\nPARAMETER bogus 1\n", "unknown parameter 'bogus'"),
    ("FROM nosuch:model\n", "nosuch"),
])
def test_create_errors_are_one_line(pollama, tmp_path, modelfile, message):
    if modelfile is not None:
        (tmp_path / "Modelfile").write_text(modelfile)
    result = pollama("create", "broken", "-f", str(tmp_path / "Modelfile"))
    assert_one_line_error(result, message)


def test_a_shown_modelfile_creates_the_same_model(pollama, tmp_path):
    """`show --modelfile` names the blob as @sha256:… (no server path); `create -f` takes it back unchanged."""
    shown = pollama("show", SHORT, "--modelfile").stdout
    assert "\nFROM @sha256:" in shown
    (tmp_path / "Modelfile").write_text(shown)
    result = pollama("create", "roundtrip", "-f", str(tmp_path / "Modelfile"))
    assert result.returncode == 0, result.stderr
    for field in ("--parameters", "--template", "--system"):
        assert pollama("show", "roundtrip", field).stdout == pollama("show", SHORT, field).stdout
    assert pollama("rm", "roundtrip").returncode == 0


def test_a_shown_modelfile_with_an_adapter_creates_the_same_model(pollama, api, tmp_path):
    from tests.engine.test_lora import ADAPTED, random_pairs, write_adapter, write_base

    folder = tmp_path / "lora"
    folder.mkdir()
    write_base(folder / "base.gguf")
    write_adapter(folder / "a.gguf", random_pairs(ADAPTED, r=4, seed=1), alpha=8.0)
    (folder / "Modelfile").write_text("FROM ./base.gguf\nADAPTER ./a.gguf\n")
    assert pollama("create", "with-lora", "-f", str(folder / "Modelfile")).returncode == 0
    shown = pollama("show", "with-lora", "--modelfile").stdout
    assert "\nADAPTER @sha256:" in shown and str(tmp_path) not in shown
    (tmp_path / "Modelfile").write_text(shown)
    result = pollama("create", "with-lora-2", "-f", str(tmp_path / "Modelfile"))
    assert result.returncode == 0, result.stderr
    layers = [api("POST", "/api/show", {"model": m}).json()["modelfile"].split("\nADAPTER ")[1].split("\n")[0]
              for m in ("with-lora", "with-lora-2")]
    assert layers[0] == layers[1]
    prompt = {"prompt": "hi", "raw": True, "stream": False, "options": {"num_predict": 4, "temperature": 0}}
    first, second = (api("POST", "/api/generate", {"model": m, **prompt}).json() for m in ("with-lora", "with-lora-2"))
    assert first["response"] == second["response"] and first["eval_count"] == second["eval_count"]
    assert pollama("rm", "with-lora", "with-lora-2").returncode == 0
