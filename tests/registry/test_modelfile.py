"""Modelfile parsing and formatting (Ollama's parser/parser.go grammar)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.modelfile import MAX_MODELFILE_CHARS, Modelfile, ModelfileError, format, parse

CHATML = '{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'

# (Modelfile text, the fields it must parse to; every field not named keeps its default)
PARSE_CASES = [
    ("FROM llama3.2", {"from_": "llama3.2"}),
    ("from llama3.2\nparameter temperature 0.7\nSyStEm hi", {
        "from_": "llama3.2", "parameters": [("temperature", "0.7")], "system": "hi"}),
    ("# leading comment\n\n   # indented comment\nFROM x\n\n", {"from_": "x"}),
    ("FROM x\nSYSTEM say # this is not a comment", {"from_": "x", "system": "say # this is not a comment"}),
    ("FROM x\nPARAMETER stop <|im_start|>\nPARAMETER stop \"<|im_end|>\"\nPARAMETER num_ctx 4096", {
        "from_": "x", "parameters": [("stop", "<|im_start|>"), ("stop", "<|im_end|>"), ("num_ctx", "4096")]}),
    ("FROM x\nPARAMETER Top_K_2 5", {"from_": "x", "parameters": [("Top_K_2", "5")]}),   # names kept verbatim
    (f'FROM x\nTEMPLATE """{CHATML}"""', {"from_": "x", "template": CHATML}),
    ('FROM x\nSYSTEM """He said "hi"."""', {"from_": "x", "system": 'He said "hi".'}),
    ('FROM x\nSYSTEM "  padded  "', {"from_": "x", "system": "  padded  "}),
    ('FROM x\nSYSTEM "line one\n  line two"', {"from_": "x", "system": "line one\n  line two"}),
    ('FROM x\nSYSTEM """\nstarts with a newline\n"""', {"from_": "x", "system": "\nstarts with a newline\n"}),
    ('FROM x\nSYSTEM ""', {"from_": "x", "system": ""}),
    ('FROM x\nSYSTEM "a" b\nstill "going"', {"from_": "x", "system": 'a" b\nstill "going'}),   # no escapes
    ("FROM x\nSYSTEM \ttabbed\tinside\t ", {"from_": "x", "system": "tabbed\tinside"}),
    ("FROM\tx\nPARAMETER\tseed\t42", {"from_": "x", "parameters": [("seed", "42")]}),
    ("\ufeffFROM x\r\nSYSTEM \"a\r\nb\"\r\n", {"from_": "x", "system": "a\nb"}),
    ("FROM x\nTEMPLATE first\nTEMPLATE second", {"from_": "x", "template": "second"}),
    ("FROM x\nLICENSE MIT\nLICENSE \"\"\"Apache\n2.0\"\"\"", {"from_": "x", "licenses": ["MIT", "Apache\n2.0"]}),
    ("FROM x\nADAPTER ./a.gguf\nADAPTER /b", {"from_": "x", "adapters": ["./a.gguf", "/b"]}),
    ("FROM x\nMESSAGE user Is it blue?\nMESSAGE assistant \"\"\"Yes.\nIt is.\"\"\"\nMESSAGE system be nice", {
        "from_": "x", "messages": [("user", "Is it blue?"), ("assistant", "Yes.\nIt is."), ("system", "be nice")]}),
    ("FROM ./model dir/m.gguf", {"from_": "./model dir/m.gguf"}),
    ("FROM x\nREQUIRES 0.14.0\nRENDERER qwen3\nPARSER qwen3\nDRAFT ./small", {
        "from_": "x", "requires": "0.14.0", "renderer": "qwen3", "parser": "qwen3", "draft": "./small"}),
    ("FROM a\nFROM b", {"from_": "b"}),
]


@pytest.mark.parametrize("text, fields", PARSE_CASES)
def test_parse(text, fields):
    assert parse(text) == Modelfile(**fields)


@pytest.mark.parametrize("text, fields", PARSE_CASES)
def test_format_round_trips(text, fields):
    mf = parse(text)
    assert parse(format(mf)) == mf


# (text, line of the error or None, part of the message)
ERROR_CASES = [
    ("PARAMETER temperature 1", None, "no FROM line"),
    ("", None, "no FROM line"),
    ("FROM x\nFOO bar", 2, 'command must be one of "from"'),
    ("FROM x\n  ; not a command", 2, "command must be one of"),
    ("FROM x\nFROMAGE y", 2, "command must be one of"),
    ("FROM", 1, "missing value for FROM"),
    ("FROM x\nSYSTEM   ", 2, "missing value for SYSTEM"),
    ("FROM x\nFROM:y", 2, "unexpected ':'"),
    ("FROM x\nPARAMETER", 2, "missing parameter name for PARAMETER"),
    ("FROM x\nPARAMETER temperature", 2, "missing value for PARAMETER temperature"),
    ("FROM x\nPARAMETER temp-x 1", 2, "unexpected '-'"),
    ("FROM x\nMESSAGE user", 2, "missing value for MESSAGE user"),
    ("FROM x\nMESSAGE bot hi", 2, 'message role must be one of "system", "user", or "assistant"'),
    ("FROM x\nMESSAGE User hi", 2, "message role must be one of"),
    ("FROM x\n\nSYSTEM \"never closed\nmore", 3, "unterminated quote"),
    ('FROM x\nTEMPLATE """open\n"', 2, "unterminated quote"),
    ('FROM x\nSYSTEM "a" b', 2, "unterminated quote"),
]


@pytest.mark.parametrize("text, line, message", ERROR_CASES)
def test_parse_errors(text, line, message):
    with pytest.raises(ModelfileError) as err:
        parse(text)
    assert err.value.line == line
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_error_message_names_the_line():
    with pytest.raises(ModelfileError, match=r"^\(line 2\): command must be one of"):
        parse("FROM x\nBAD y")


def test_input_size_is_bounded():
    with pytest.raises(ModelfileError, match="longer than"):
        parse("FROM x\n" + "#" * MAX_MODELFILE_CHARS)


def test_format_layout():
    mf = Modelfile(from_="llama3", parameters=[("stop", "<|eot_id|>"), ("stop", " spaced ")], template=CHATML,
                   system='He said:\n"hi"', adapters=["./lora.gguf"], licenses=["MIT"], messages=[("user", "q")])
    assert format(mf) == (
        "FROM llama3\n"
        "ADAPTER ./lora.gguf\n"
        f'TEMPLATE "{CHATML}"\n'
        'SYSTEM """He said:\n"hi""""\n'
        "PARAMETER stop <|eot_id|>\n"
        'PARAMETER stop " spaced "\n'
        "LICENSE MIT\n"
        "MESSAGE user q\n")


def test_format_refuses_values_no_quoting_can_carry():
    with pytest.raises(ModelfileError, match="cannot be written"):
        format(Modelfile(from_="x", system='a"""\nb'))


_VALUES = st.text(alphabet=' \t\n"#ab', max_size=12)


@given(st.lists(_VALUES, max_size=3), _VALUES, st.one_of(st.none(), _VALUES), st.lists(_VALUES, max_size=2))
def test_format_then_parse_is_identity(params, system, template, licenses):
    mf = Modelfile(from_="m", parameters=[("p", v) for v in params], system=system, template=template,
                   licenses=licenses, messages=[("user", v) for v in params])
    try:
        text = format(mf)
    except ModelfileError:
        assert any('"""' in v for v in [*params, system, template or "", *licenses])
        return
    assert parse(text) == mf
