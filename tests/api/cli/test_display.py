"""The CLI's text helpers against Ollama's own expectations (format/bytes_test.go, format/time_test.go, Go's
time.Duration.String, the `ollama show` and `--verbose` layouts)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from api.client import base_url
from api.commands.display import go_duration, human_bytes, human_number, human_time, parse_time, table
from api.commands.models import processor, show_info
from api.commands.params import parameters, typed
from api.commands.session import Session, print_summary


@pytest.mark.parametrize("n, want", [
    (0, "0 B"), (1, "1 B"), (999, "999 B"), (1000, "1 KB"), (1500, "1.5 KB"), (999999, "999 KB"),
    (1000000, "1 MB"), (1500000, "1.5 MB"), (999999999, "999 MB"), (1000000000, "1 GB"), (1500000000, "1.5 GB"),
    (999999999999, "999 GB"), (1000000000000, "1 TB"), (1500000000000, "1.5 TB"), (1999999999999, "2.0 TB"),
    (1234, "1.2 KB"), (1234567, "1.2 MB"), (1234567890, "1.2 GB"),
    (98_358_432, "98 MB"),            # smollm2:135m's size as `ollama list` shows it
])
def test_human_bytes(n, want):
    assert human_bytes(n) == want


@pytest.mark.parametrize("n, want", [(134_515_008, "134.52M"), (8_000_000_000, "8B"), (1_235_814_400, "1.2B"),
                                     (22_000_000, "22M"), (999, "999"), (2500, "2K")])
def test_human_number(n, want):
    assert human_number(n) == want


NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("delta, want", [
    (timedelta(hours=48), "2 days from now"), (timedelta(hours=-48), "2 days ago"),
    (timedelta(milliseconds=800), "Less than a second from now"), (timedelta(days=365 * 200), "Forever"),
    (timedelta(seconds=-1), "1 second ago"), (timedelta(seconds=-45), "45 seconds ago"),
    (timedelta(seconds=-90), "About a minute ago"), (timedelta(minutes=-2), "2 minutes ago"),
    (timedelta(minutes=-65), "About an hour ago"), (timedelta(minutes=4, seconds=59), "4 minutes from now"),
    (timedelta(days=-20), "2 weeks ago"), (timedelta(days=-100), "3 months ago"),
    (-timedelta(hours=17519, minutes=20), "24 months ago"), (-timedelta(hours=17519, minutes=30), "2 years ago"),
    (-timedelta(hours=26280), "3 years ago"),
])
def test_human_time(delta, want):
    assert human_time(NOW + delta, "Never", NOW) == want


def test_human_time_of_nothing_is_the_zero_word():
    assert human_time(None, "Never", NOW) == "Never"


@pytest.mark.parametrize("text, want", [
    ("2024-07-22T20:47:51.147561Z", datetime(2024, 7, 22, 20, 47, 51, 147561, tzinfo=UTC)),
    ("2024-07-22T20:47:51.147561123Z", datetime(2024, 7, 22, 20, 47, 51, 147561, tzinfo=UTC)),   # Go: ns
    ("2024-07-22T13:47:51.5-07:00", datetime(2024, 7, 22, 20, 47, 51, 500000, tzinfo=UTC)),
    ("2024-07-22T20:47:51+00:00", datetime(2024, 7, 22, 20, 47, 51, tzinfo=UTC)),
    ("0001-01-01T00:00:00Z", None), ("", None), ("yesterday", None),
])
def test_parse_time(text, want):
    assert parse_time(text) == want


@pytest.mark.parametrize("ns, want", [            # Go's time.Duration(ns).String()
    (0, "0s"), (1, "1ns"), (999, "999ns"), (1000, "1µs"), (1500, "1.5µs"), (1_000_000, "1ms"),
    (217_005_604, "217.005604ms"), (1_000_000_000, "1s"), (1_234_567_891, "1.234567891s"), (1_500_000_000, "1.5s"),
    (60_000_000_000, "1m0s"), (61_000_000_000, "1m1s"), (3_661_500_000_000, "1h1m1.5s"),
    (7_200_000_000_000, "2h0m0s"), (-1_500_000, "-1.5ms"),
])
def test_go_duration(ns, want):
    assert go_duration(ns) == want


def test_table_is_left_aligned_with_four_space_gaps():
    text = table(["NAME", "ID", "SIZE"], [["smollm2:135m", "5bb8ed0e8b3c", "98 MB"], ["a:b", "0123456789ab", "1 KB"]])
    assert text == ("NAME            ID              SIZE\n"
                    "smollm2:135m    5bb8ed0e8b3c    98 MB\n"
                    "a:b             0123456789ab    1 KB\n")


@pytest.mark.parametrize("host, want", [
    ("127.0.0.1:11434", "http://127.0.0.1:11434"), ("localhost", "http://localhost:11434"),
    (":8080", "http://127.0.0.1:8080"), ("0.0.0.0:1234", "http://127.0.0.1:1234"),
    ("https://example.com", "https://example.com:443"), ("http://10.0.0.5:9000/", "http://10.0.0.5:9000"),
    ("[::1]:11434", "http://[::1]:11434"), ("::1", "http://[::1]:11434"), ("", "http://127.0.0.1:11434"),
])
def test_base_url_from_pollama_host(host, want):
    assert base_url(host) == want


@pytest.mark.parametrize("size, vram, want", [(100, 0, "100% CPU"), (100, 100, "100% GPU"),
                                              (100, 25, "75%/25% CPU/GPU"), (100, 200, "Unknown")])
def test_processor(size, vram, want):
    assert processor(size, vram) == want


def test_parameter_values_are_typed_by_their_form():
    assert [typed(t) for t in ("42", "0.7", "true", "False", "<|im_end|>", "nan", "1e3")] == \
        [42, 0.7, True, False, "<|im_end|>", "nan", 1000.0]
    assert parameters([("stop", "a"), ("temperature", "0"), ("stop", "b"), ("temperature", "0.5")]) == \
        {"stop": ["a", "b"], "temperature": 0.5}


def test_show_info_layout():
    resp = {
        "details": {"family": "llama", "parameter_size": "135M", "quantization_level": "Q4_1"},
        "model_info": {"general.architecture": "llama", "general.parameter_count": 134515008,
                       "llama.context_length": 8192, "llama.embedding_length": 576},
        "capabilities": ["completion"],
        "parameters": 'stop                           "<|im_start|>"\ntemperature                    0',
        "system": "You are a pirate.\nArr.\nThird line.\n",
    }
    out = io.StringIO()
    show_info(resp, out)
    assert out.getvalue() == (
        "  Model\n"
        "    architecture        llama\n"
        "    parameters          134.52M\n"
        "    context length      8192\n"
        "    embedding length    576\n"
        "    quantization        Q4_1\n"
        "\n"
        "  Capabilities\n"
        "    completion\n"
        "\n"
        "  Parameters\n"
        '    stop           "<|im_start|>"\n'
        "    temperature    0\n"
        "\n"
        "  System\n"
        "    You are a pirate.\n"
        "    Arr.\n"
        "    ...\n"
        "\n")


def test_verbose_summary_layout():
    final = {"done": True, "total_duration": 1_832_089_053, "load_duration": 599_799_952, "prompt_eval_count": 15,
             "prompt_eval_duration": 217_005_604, "eval_count": 30, "eval_duration": 1_004_850_252}
    out = io.StringIO()
    print_summary(final, out)
    assert out.getvalue() == (
        "total duration:       1.832089053s\n"
        "load duration:        599.799952ms\n"
        "prompt eval count:    15 token(s)\n"
        "prompt eval duration: 217.005604ms\n"
        "prompt eval rate:     69.12 tokens/s\n"
        "eval count:           30 token(s)\n"
        "eval duration:        1.004850252s\n"
        "eval rate:            29.86 tokens/s\n")


def test_session_sends_only_what_was_set():
    assert Session("m").request(prompt="hi") == {"model": "m", "prompt": "hi"}
    s = Session("m", format="json", keep_alive="5m", options={"seed": 1})
    assert s.request(messages=[]) == {"model": "m", "messages": [], "format": "json", "keep_alive": "5m",
                                      "options": {"seed": 1}}
