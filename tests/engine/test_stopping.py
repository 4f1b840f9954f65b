"""StopMatcher: stop strings across piece boundaries, never emitted, independent of how text is split."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.stopping import StopMatcher


def run(stops, pieces):
    """Push ``pieces`` in turn: (emitted text, flush included if not stopped; stopped?; per-push outputs)."""
    matcher = StopMatcher(stops)
    outputs, stopped = [], False
    for piece in pieces:
        out, stopped = matcher.push(piece)
        outputs.append(out)
        if stopped:
            break
    emitted = "".join(outputs) + ("" if stopped else matcher.flush())
    return emitted, stopped, outputs


def splits(text):
    """Every way to cut ``text`` into non-empty consecutive pieces (2^(len-1) of them)."""
    for cuts in itertools.product([False, True], repeat=len(text) - 1):
        pieces, start = [], 0
        for i, cut in enumerate(cuts, 1):
            if cut:
                pieces.append(text[start:i])
                start = i
        yield pieces + [text[start:]]


def reference(stops, text):
    """Streaming one character at a time: the text before the first stop string to complete."""
    for end in range(1, len(text) + 1):
        ending = [s for s in stops if s and text[:end].endswith(s)]
        if ending:
            return text[: end - max(map(len, ending))], True
    return text, False


@pytest.mark.parametrize("text, stops, want", [
    ("Hello###World", ["###"], "Hello"),
    ("###Hello", ["###"], ""),                               # a stop at the very start
    ("Hello#World##", ["###"], "Hello#World##"),             # partial matches released at the end
    ("one\nUser: two", ["User:", "\nUser:"], "one"),          # overlapping stops: the longer one ending first
    ("abcd", ["abcd", "bc"], "a"),                            # the stop that completes first wins
    ("aab", ["ab"], "a"),                                     # a failed partial start re-anchors within
    ("ababac", ["abac"], "ab"),
    ("café ☕ fin", ["☕"], "café "),                          # unicode
    ("日本語のテキスト。終わ", ["。終"], "日本語のテキスト"),
    ("emoji 😀😁 end", ["😁 e"], "emoji 😀"),
])
def test_every_split_gives_the_same_result(text, stops, want):
    for pieces in splits(text):
        emitted, stopped, outputs = run(stops, pieces)
        assert emitted == want, pieces
        assert stopped == (want != text)
        assert all(s not in "".join(outputs) for s in stops)


def test_text_is_released_as_soon_as_it_cannot_start_a_stop():
    matcher = StopMatcher(["</s>", "###"])
    assert matcher.push("Hello <") == ("Hello ", False)       # "<" could begin "</s>"
    assert matcher.push("b>") == ("<b>", False)               # it did not
    assert matcher.push(" x #") == (" x ", False)
    assert matcher.push("#") == ("", False)                   # "##" still could
    assert matcher.push("!") == ("##!", False)
    assert matcher.flush() == ""


def test_flush_releases_a_held_partial_stop_at_the_end():
    matcher = StopMatcher(["<|end|>"])
    assert matcher.push("answer <|en") == ("answer ", False)
    assert matcher.flush() == "<|en"
    assert matcher.flush() == ""


def test_after_a_stop_nothing_more_is_emitted():
    matcher = StopMatcher(["STOP"])
    assert matcher.push("abcSTOPdef") == ("abc", True)
    assert matcher.push("more") == ("", True)
    assert matcher.stopped


def test_no_stops_passes_everything_through():
    matcher = StopMatcher([])
    assert matcher.push("abc") == ("abc", False)
    assert matcher.flush() == ""


def test_empty_stop_strings_are_ignored():
    assert run(["", "x"], ["abxcd"])[:2] == ("ab", True)
    assert run([""], ["abc"])[:2] == ("abc", False)


alphabet = st.sampled_from("ab#é")


@given(text=st.text(alphabet, max_size=14),
       stops=st.lists(st.text(alphabet, min_size=1, max_size=4), max_size=3),
       cut_seed=st.lists(st.integers(1, 4), max_size=14))
def test_matches_character_by_character_reference_for_any_split(text, stops, cut_seed):
    pieces, i = [], 0
    for n in cut_seed:
        if i >= len(text):
            break
        pieces.append(text[i:i + n])
        i += n
    pieces.append(text[i:])
    emitted, stopped, outputs = run(stops, pieces)
    assert (emitted, stopped) == reference(stops, text)
    released = "".join(outputs)
    assert text.startswith(released)                          # emitted text is never revised
