"""The interactive chat of `pollama run MODEL`: Ollama's prompt, slash commands and \"\"\" multi-line input."""

from __future__ import annotations

import readline
import sys
from pathlib import Path

from api.client import Client, ResponseError
from api.commands import models
from api.commands.params import LIST_PARAMETERS, typed
from api.commands.session import Session, print_summary, stream_text

PROMPT, ALT_PROMPT = ">>> ", "... "
QUOTES = '"""'
HISTORY_LINES = 1000

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message.
"""
HELP_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
"""
HELP_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""
HELP_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter stop <string> <string> ...   Set the stop parameters
"""


def history_path() -> Path:
    return Path.home() / ".pollama" / "history"


class Repl:
    """Reads lines with readline (editing and a persistent history) and chats through /api/chat."""

    def __init__(self, client: Client, session: Session, info: dict) -> None:
        self.client, self.session, self.info = client, session, info
        self.pending: list[str] = []      # lines of an unfinished \"\"\" block
        self.multiline: str | None = None  # None, "prompt" or "system" while a \"\"\" block is open

    def loop(self) -> int:
        self._show_preset_messages()
        _load_history()
        try:
            while True:
                try:
                    line = input(ALT_PROMPT if self.multiline else PROMPT)
                except EOFError:
                    print()
                    return 0
                except KeyboardInterrupt:
                    self._interrupted()
                    continue
                if not self.handle(line):
                    return 0
        finally:
            _save_history()

    def _show_preset_messages(self) -> None:
        for message in self.info.get("messages") or []:
            if message.get("role") == "user":
                print(f">>> {message.get('content', '')}")
            elif message.get("role") == "assistant":
                print(f"{message.get('content', '')}\n")

    def _interrupted(self) -> None:
        if not self.pending and not self.multiline:
            print("\nUse Ctrl + d or /bye to exit.")
        else:
            print()
        self.pending, self.multiline = [], None

    def handle(self, line: str) -> bool:
        """Act on one input line; False when the session should end."""
        if self.multiline:
            return self._continue_block(line)
        if line.startswith(QUOTES):
            rest = line[len(QUOTES):]
            if rest.endswith(QUOTES) and rest:
                return self.send(rest[:-len(QUOTES)])
            self.pending, self.multiline = [rest], "prompt"
            return True
        if line.startswith("/"):
            return self.command(line)
        return self.send(line) if line.strip() else True

    def _continue_block(self, line: str) -> bool:
        if not line.endswith(QUOTES):
            self.pending.append(line)
            return True
        text = "\n".join([*self.pending, line[:-len(QUOTES)]])
        kind, self.pending, self.multiline = self.multiline, [], None
        if kind == "system":
            self.set_system(text)
            return True
        return self.send(text)

    def command(self, line: str) -> bool:
        args = line.split()
        name = args[0]
        if name in ("/bye", "/exit"):
            return False
        if name == "/clear":
            system = self.session.system
            self.session.messages = [{"role": "system", "content": system}] if system else []
            print("Cleared session context")
        elif name == "/set":
            self.cmd_set(line, args)
        elif name == "/show":
            self.cmd_show(args)
        elif name in ("/?", "/help"):
            topic = args[1].lstrip("/") if len(args) > 1 else ""
            sys.stderr.write({"set": HELP_SET, "show": HELP_SHOW}.get(topic, HELP) + "\n")
        else:
            print(f"Unknown command '{name}'. Type /? for help")
        return True

    def cmd_set(self, line: str, args: list[str]) -> None:
        what = args[1] if len(args) > 1 else ""
        toggles = {"verbose": ("verbose", True), "quiet": ("verbose", False)}
        if what in toggles:
            attr, value = toggles[what]
            setattr(self.session, attr, value)
            print(f"Set '{what}' mode.")
        elif what in ("history", "nohistory"):
            readline.set_auto_history(what == "history")
        elif what == "format":
            if len(args) < 3 or args[2] != "json":
                print("Invalid or missing format. For 'json' mode use '/set format json'")
            else:
                self.session.format = "json"
                print("Set format to 'json' mode.")
        elif what == "noformat":
            self.session.format = None
            print("Disabled format.")
        elif what == "parameter":
            self.set_parameter(args[2:])
        elif what == "system":
            self.set_system_line(line)
        elif not what:
            sys.stderr.write(HELP_SET + "\n")
        else:
            print(f"Unknown command '/set {what}'. Type /? for help")

    def set_parameter(self, args: list[str]) -> None:
        if len(args) < 2:
            sys.stderr.write(HELP_PARAMETERS + "\n")
            return
        name, values = args[0], args[1:]
        self.session.options[name] = list(values) if name in LIST_PARAMETERS else typed(values[0])
        print(f"Set parameter '{name}' to '{', '.join(values)}'")

    def set_system_line(self, line: str) -> None:
        """`/set system text` or `/set system \"\"\"…` opening a multi-line block."""
        text = line.split(None, 2)[2] if len(line.split(None, 2)) > 2 else ""
        if not text:
            sys.stderr.write(HELP_SET + "\n")
            return
        if text.startswith(QUOTES):
            body = text[len(QUOTES):]
            if not (body.endswith(QUOTES) and body):
                self.pending, self.multiline = [body], "system"
                return
            text = body[:-len(QUOTES)]
        self.set_system(text)

    def set_system(self, text: str) -> None:
        self.session.system = text
        message = {"role": "system", "content": text}
        messages = self.session.messages
        if messages and messages[-1]["role"] == "system":
            messages[-1] = message
        else:
            messages.append(message)
        print("Set system message.")

    def cmd_show(self, args: list[str]) -> None:
        if len(args) < 2:
            sys.stderr.write(HELP_SHOW + "\n")
            return
        what = args[1]
        system = self.session.system
        resp = self.client.show(self.session.model, **({"system": system} if system else {}))
        if what == "info":
            models.show_info(resp, sys.stdout)
        elif what == "system":
            print(self.session.system or resp.get("system") or "No system message was specified for this model.")
        elif what == "parameters":
            self._show_parameters(resp)
        elif what in ("license", "modelfile", "template"):
            empty = {"license": "No license was specified for this model.",
                     "template": "No prompt template was specified for this model."}.get(what, "")
            print(resp.get(what) or empty)
        else:
            print(f"Unknown command '/show {what}'. Type /? for help")

    def _show_parameters(self, resp: dict) -> None:
        print("Model defined parameters:")
        lines = (resp.get("parameters") or "").splitlines()
        for line in lines or ["No additional parameters were specified for this model."]:
            print(f"  {line}")
        print()
        if self.session.options:
            print("User defined parameters:")
            for name, value in self.session.options.items():
                print(f"  {name:<30} {value}")
            print()

    def send(self, text: str) -> bool:
        """One chat turn: the answer streams to the terminal; Ctrl-C stops it and drops the turn."""
        session = self.session
        session.messages.append({"role": "user", "content": text})
        try:
            final, reply = self._chat()
        except KeyboardInterrupt:
            session.messages.pop()
            print()
            return True
        except ResponseError as exc:
            session.messages.pop()
            print(f"Error: {exc}", file=sys.stderr)
            return True
        session.messages.append({"role": "assistant", "content": reply})
        print("\n")
        if session.verbose and final.get("done"):
            print_summary(final, sys.stderr)
        return True

    def _chat(self) -> tuple[dict, str]:
        parts: list[str] = []

        def text_of(chunk: dict) -> str:
            parts.append((chunk.get("message") or {}).get("content", ""))
            return parts[-1]

        chunks = self.client.chat(self.session.request(messages=self.session.messages))
        final = stream_text(chunks, text_of, sys.stdout)
        return final, "".join(parts)


def _load_history() -> None:
    readline.set_history_length(HISTORY_LINES)
    try:
        readline.read_history_file(history_path())
    except OSError:
        pass      # no history yet


def _save_history() -> None:
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
    except OSError:
        pass      # a read-only home only loses the history
