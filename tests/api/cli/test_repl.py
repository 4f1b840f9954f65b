"""The interactive `pollama run MODEL`, driven through a pseudo-terminal: a two-turn chat whose answers are exactly
what /api/chat gives for the same history, \"\"\" multi-line input, the slash commands, Ctrl-C, history and /bye."""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect
import pytest

from tests.api.cli.conftest import SHORT

PROMPT = ">>> "


@pytest.fixture
def repl(cli_env):
    child = pexpect.spawn(sys.executable, ["-m", "api", "run", SHORT], env={**cli_env, "TERM": "dumb"},
                          encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.expect_exact(PROMPT)          # after the model has loaded
    yield child
    child.close(force=True)


def say(child: pexpect.spawn, line: str) -> str:
    """Send one line and return what was printed before the next prompt (without the echoed line)."""
    child.sendline(line)
    child.expect_exact([PROMPT, "... "])
    text = child.before.replace("\r\n", "\n")
    return text.split("\n", 1)[1] if "\n" in text else ""


def reply(printed: str) -> str:
    """The model's answer: what follows the spinner's erase sequence, minus the blank line after it."""
    return printed.split("\x1b[K")[-1].removesuffix("\n\n")


def chat(api, messages: list[dict]) -> str:
    body = {"model": SHORT, "messages": messages, "stream": False}
    return api("POST", "/api/chat", body).json()["message"]["content"]


def test_two_turn_chat_then_bye(repl, api, cli_env):
    first = reply(say(repl, "Why is the sky blue?"))
    history = [{"role": "user", "content": "Why is the sky blue?"}]
    assert first == chat(api, history) and first
    history.append({"role": "assistant", "content": first})
    assert say(repl, '"""Say it') == ""                      # the block stays open: the ... prompt
    second = reply(say(repl, 'more simply."""'))
    history.append({"role": "user", "content": "Say it\nmore simply."})
    assert second == chat(api, history)
    repl.sendline("/bye")
    repl.expect(pexpect.EOF)
    repl.close()
    assert repl.exitstatus == 0
    saved = (Path(cli_env["HOME"]) / ".pollama" / "history").read_text()
    assert "Why is the sky blue?" in saved and "/bye" in saved


def test_slash_commands(repl):
    assert say(repl, "/set system You are a pirate.").strip() == "Set system message."
    assert say(repl, "/show system").strip() == "You are a pirate."
    assert say(repl, '/set system """You are') == ""
    assert say(repl, 'a parrot."""').strip() == "Set system message."
    assert say(repl, "/show system").strip() == "You are\na parrot."
    assert say(repl, "/set parameter num_predict 4").strip() == "Set parameter 'num_predict' to '4'"
    shown = say(repl, "/show parameters")
    assert "User defined parameters:" in shown and "num_predict                    4" in shown
    assert "    architecture        llama" in say(repl, "/show info")
    assert say(repl, "/set format json").strip() == "Set format to 'json' mode."
    assert say(repl, "/set noformat").strip() == "Disabled format."
    assert say(repl, "/clear").strip() == "Cleared session context"
    assert say(repl, "/nonsense").strip() == "Unknown command '/nonsense'. Type /? for help"
    assert "/set            Set session variables" in say(repl, "/?")


def test_ctrl_c_at_the_prompt_then_ctrl_d(repl):
    repl.sendintr()
    repl.expect_exact("Use Ctrl + d or /bye to exit.")
    repl.expect_exact(PROMPT)
    repl.sendeof()
    repl.expect(pexpect.EOF)
    repl.close()
    assert repl.exitstatus == 0
