"""`pollama run MODEL PROMPT`: what it prints is exactly what the API answers, piped stdin joins the prompt,
--verbose adds Ollama's statistics, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import re
import sys

import pexpect

from tests.api.cli.conftest import PROMPT, SHORT, SHORT_TOKENS, answer


def test_run_prints_the_streamed_answer(pollama, api):
    result = pollama("run", SHORT, PROMPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == answer(api, PROMPT) + "\n\n"      # greedy: the same text, then Ollama's blank line
    assert result.stderr == ""                                # no spinner when stderr is not a terminal


def test_prompt_words_are_joined(pollama, api):
    result = pollama("run", SHORT, "Why", "is", "the", "sky", "blue?")
    assert result.stdout == answer(api, PROMPT) + "\n\n"


def test_piped_stdin_comes_before_the_prompt_words(pollama, api):
    result = pollama("run", SHORT, "Answer in one line.", stdin=PROMPT + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == answer(api, PROMPT + "\n Answer in one line.") + "\n\n"


def test_a_piped_prompt_alone(pollama, api):
    result = pollama("run", SHORT, stdin=PROMPT)
    assert result.stdout == answer(api, PROMPT) + "\n\n"


def test_verbose_prints_the_timings(pollama):
    result = pollama("run", SHORT, PROMPT, "--verbose")
    assert result.returncode == 0, result.stderr
    labels = [line.split(":")[0] for line in result.stderr.splitlines()]
    expected = ["total duration", "load duration", "prompt eval count", "prompt eval duration", "prompt eval rate",
                "eval count", "eval duration", "eval rate"]
    assert labels in (expected, [x for x in expected if x != "load duration"])   # a 0 ns load is left out
    stats = dict(line.split(":", 1) for line in result.stderr.splitlines())
    assert re.fullmatch(r" +\d+\.\d\d tokens/s", stats["eval rate"])
    assert re.fullmatch(r" +\d+\.\d\d tokens/s", stats["prompt eval rate"])
    eval_count = int(re.fullmatch(r" +(\d+) token\(s\)", stats["eval count"])[1])
    assert 1 <= eval_count <= SHORT_TOKENS
    assert re.fullmatch(r" +[\d.]+(ns|µs|ms|s)", stats["eval duration"])


def test_format_json_is_passed_on(pollama, api):
    result = pollama("run", SHORT, "List three colors as JSON.", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == answer(api, "List three colors as JSON.", format="json") + "\n\n"


def test_a_server_error_is_one_line(pollama):
    result = pollama("run", SHORT, PROMPT, "--keepalive", "soon")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_ctrl_c_stops_the_answer(cli_env, pollama):
    child = pexpect.spawn(sys.executable, ["-m", "api", "run", "smollm2:135m", "Tell me a very long story."],
                          env={**cli_env, "TERM": "dumb"}, encoding="utf-8", timeout=60)
    child.expect(r"\w+ \w+")               # the answer has started
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert "Traceback" not in child.before
    assert pollama("list").returncode == 0              # the server carries on
