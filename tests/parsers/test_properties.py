"""Hypothesis properties over generated GLM-5 turns and arbitrary text, any chunking.

1. Well-formed turns are built from a known structure (reasoning, content, calls with typed
   values rendered as the chat template does), so the expected result comes from the generator,
   not from the parser: the streamed and the one-shot `arguments` are exactly
   `json.dumps(generated arguments, ensure_ascii=False)`.
2. The same turns cut off anywhere (max_tokens): streaming equals one-shot, the argument pieces
   streamed before the cut are a prefix of the full turn's arguments, and the cut-off calls keep
   their names and every value completed so far (a cut string value is a prefix of the full one).
3. String values stream while they are generated: after any prefix of the turn, the arguments
   sent hold the value's text up to the last 11 characters (a possibly cut-off tag).
4. Arbitrary text mixing tags, tag fragments and unicode: the parser never raises, streaming
   equals the one-shot parse, and the ordered output is the input with only tags and
   whitespace removed.
Every streamed parse also checks (helpers.check_pieces) that each call starts once, its pieces
concatenate to its final `arguments` (so every intermediate concatenation is a prefix of it), and
that `arguments` is a JSON object. The example counts add up to 7,100 generated cases per run.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glm52_plugin.parsers import (
    ContentText,
    Event,
    GlmStreamParser,
    ReasoningParser,
    ReasoningText,
    ToolCallArgs,
    ToolCallDone,
    ToolCallParser,
    ToolCallStart,
)
from tests.parsers.helpers import arguments, check_pieces, stream, strict, summary

TAGS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>",
        "<arg_value>", "</arg_value>")  # fmt: skip
FAST = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)

# Text that exercises tag look-alikes: '<', '/', '>' and tag letters, unicode, newlines.
ALPHABET = st.sampled_from(
    [*list('<>/_ \nabcdegiklnorstuvyé中🙂"{}[]:,'), "<tool_", "</arg", "call>", "<think"]
)
free_text = st.lists(ALPHABET, max_size=12).map("".join)


def no_tags(text: str) -> bool:
    return not any(t in text for t in TAGS)


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


# -- generated well-formed turns ------------------------------------------------------

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32), st.text("abc é中", max_size=4),
)  # fmt: skip
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text("xyz", min_size=1, max_size=3), inner, max_size=3),
    ),
    max_leaves=6,
)

TYPED = {
    "string": free_text.filter(no_tags),
    "integer": st.integers(-(10**12), 10**12),
    "number": st.one_of(st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False)),
    "boolean": st.booleans(),
    "null": st.none(),
    "object": st.dictionaries(st.text("xyz", min_size=1, max_size=3), json_value, max_size=3),
    "array": st.lists(json_value, max_size=3),
}


@st.composite
def tool_call(draw: Any, index: int) -> tuple[str, dict[str, tuple[str, Any]], list[str]]:
    name = draw(st.text("abcXYZ_.-09", max_size=8)) + f"f_{index}"
    keys = draw(st.lists(st.text("abcxyz_09", min_size=1, max_size=6), max_size=4, unique=True))
    args = {k: (kind := draw(st.sampled_from(sorted(TYPED))), draw(TYPED[kind])) for k in keys}
    seps = draw(
        st.lists(st.sampled_from(["", "\n", " "]), min_size=len(keys) + 1, max_size=len(keys) + 1)
    )
    return name, args, seps


def render_call(name: str, args: dict[str, tuple[str, Any]], seps: list[str]) -> str:
    parts = [name, seps[0]]
    for (key, (kind, value)), sep in zip(args.items(), seps[1:], strict=True):
        shown = value if kind == "string" else json.dumps(value, ensure_ascii=False)
        parts.append(f"<arg_key>{key}</arg_key><arg_value>{shown}</arg_value>{sep}")
    return "<tool_call>" + "".join(parts) + "</tool_call>"


@st.composite
def glm_turn(
    draw: Any,
) -> tuple[str, bool, Any, tuple[str | None, str | None, list[tuple[str, str]]]]:
    thinking = draw(st.booleans())
    reasoning = draw(free_text.filter(no_tags)) if thinking else ""
    n_calls = draw(st.integers(0, 3))
    calls = [draw(tool_call(i)) for i in range(n_calls)]
    # content texts between calls; think tags after reasoning are plain content by design
    content_alphabet = st.one_of(free_text, st.sampled_from(["<think>", "</think>", " ", "\n"]))
    contents = [
        draw(content_alphabet.filter(lambda t: "<tool_call>" not in t)) for _ in range(n_calls + 1)
    ]
    # reasoning may end by </think> or, when a call comes first, by the call itself
    close_think = thinking and (not calls or contents[0] or draw(st.booleans()))
    text = ("<think>" if thinking and draw(st.booleans()) else "") + reasoning
    text += "</think>" if close_think else ""
    for content, call in zip(contents, [*calls, None], strict=True):
        text += content + (render_call(*call) if call else "")
    tools = [
        {"type": "function", "function": {"name": name, "parameters": {
            "type": "object", "properties": {k: {"type": kind} for k, (kind, _) in args.items()}}}}
        for name, args, _ in calls
    ]  # fmt: skip
    content = "".join(contents)
    if calls and content.isspace():
        content = ""  # whitespace-only content beside tool calls is dropped (vLLM, SGLang)
    want_calls = [(name, strict({k: v for k, (_, v) in args.items()})) for name, args, _ in calls]
    want_json = [
        json.dumps({k: v for k, (_, v) in args.items()}, ensure_ascii=False) for _, args, _ in calls
    ]
    return text, thinking, tools, (reasoning or None, content or None, want_calls), want_json


def _canon(result: tuple[str | None, str | None, list[tuple[str, Any]]]) -> tuple[Any, ...]:
    reasoning, content, calls = result
    return reasoning, content, [(name, strict(args)) for name, args in calls]


@settings(FAST, max_examples=1000)
@given(turn=glm_turn(), cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_generated_turn_parses_to_its_structure_for_any_chunking(
    turn: Any, cuts: list[int]
) -> None:
    text, thinking, tools, want, want_json = turn
    # make sure the generator did not produce extra tags by juxtaposition
    assert text.count("<tool_call>") == len(want[2])
    events = stream(split_at(text, cuts), tools, thinking=thinking)
    assert _canon(summary(events)) == want
    assert arguments(events) == want_json
    one_shot = GlmStreamParser.parse(text, tools, thinking=thinking)
    calls = [(c.name, json.loads(c.arguments)) for c in one_shot.tool_calls]
    assert _canon((one_shot.reasoning, one_shot.content, calls)) == want
    assert [c.arguments for c in one_shot.tool_calls] == want_json


def _sent(events: list[Event]) -> dict[int, str]:
    sent: dict[int, str] = {}
    for e in events:
        if isinstance(e, ToolCallStart):
            sent[e.index] = ""
        elif isinstance(e, ToolCallArgs):
            sent[e.index] += e.text
    return sent


def _cut_value(value: str, whole: str) -> bool:
    """`value` is `whole` cut off, possibly ending in the start of a tag that the cut made text
    (at the end of the stream a held-back `<`, `</arg_v`... can only be text)."""
    return any(
        whole.startswith(value[: len(value) - j])
        and any(t.startswith(value[len(value) - j :]) for t in TAGS)
        for j in range(min(len(value), 11) + 1)
    )


@settings(FAST, max_examples=600)
@given(turn=glm_turn(), cut=st.integers(0, 10**6), cuts=st.lists(st.integers(0, 10**6), max_size=6))
def test_cut_off_turn_keeps_names_and_completed_arguments(
    turn: Any, cut: int, cuts: list[int]
) -> None:
    text, thinking, tools, _, want_json = turn
    prefix = text[: cut % (len(text) + 1)]
    p = GlmStreamParser(tools, thinking=thinking)
    before: list[Event] = []
    for chunk in split_at(prefix, cuts):
        before += p.feed(chunk)
    for index, sent in _sent(before).items():  # nothing sent before the cut is ever changed
        assert want_json[index].startswith(sent)
    events = before + p.finish()
    check_pieces(events, final=True)
    one_shot = GlmStreamParser.parse(prefix, tools, thinking=thinking)
    assert _canon(summary(events)) == _canon(
        (
            one_shot.reasoning,
            one_shot.content,
            [(c.name, json.loads(c.arguments)) for c in one_shot.tool_calls],
        )
    )
    full = [json.loads(a) for a in want_json]
    got = [e.call for e in events if isinstance(e, ToolCallDone)]
    assert len(got) <= len(full)
    names = [name for name, _ in turn[3][2]]
    for i, call in enumerate(got):
        assert call.name == names[i]
        for key, value in json.loads(call.arguments).items():
            whole = full[i][key]
            if strict(value) != strict(whole):  # only the value the cut went through
                assert isinstance(value, str)
                assert isinstance(whole, str)
                assert _cut_value(value, whole)


@settings(FAST, max_examples=500)
@given(
    values=st.lists(free_text.filter(no_tags), min_size=1, max_size=3),
    cut=st.integers(0, 10**6),
    cuts=st.lists(st.integers(0, 10**6), max_size=6),
)
def test_string_values_stream_while_generated(values: list[str], cut: int, cuts: list[int]) -> None:
    keys = [f"k{i}" for i in range(len(values))]
    props = {k: {"type": "string"} for k in keys}
    tools = [{"type": "function", "function": {"name": "w", "parameters": {"properties": props}}}]
    head = "<tool_call>w"
    starts = []  # where each value starts in the text
    text = head
    for k, v in zip(keys, values, strict=True):
        text += f"<arg_key>{k}</arg_key><arg_value>"
        starts.append(len(text))
        text += v + "</arg_value>"
    text += "</tool_call>"
    # cut inside one of the values
    which = cut % len(values)
    at = starts[which] + (cut // len(values)) % (len(values[which]) + 1)
    p = GlmStreamParser(tools, thinking=False)
    events: list[Event] = []
    for chunk in split_at(text[:at], cuts):
        events += p.feed(chunk)
    sent = _sent(events)[0]
    done = {k: v for k, v in zip(keys[:which], values[:which], strict=True)}
    head_json = json.dumps(done, ensure_ascii=False)[:-1] + (", " if done else "")
    written = values[which][: max(0, at - starts[which] - 11)]
    expected = (
        head_json + json.dumps(keys[which]) + ': "' + json.dumps(written, ensure_ascii=False)[1:-1]
    )
    assert sent.startswith(expected)


# -- arbitrary text -------------------------------------------------------------------

noise = st.lists(
    st.one_of(
        st.sampled_from(TAGS),
        st.sampled_from(
            ["<tool_", "call>", "</arg_", "<think", "f", "get", "k", "7", "true", "[1]"]
        ),
        free_text,
    ),
    max_size=16,
).map("".join)
NOISE_TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object",
    "properties": {"k": {"type": "integer"}}}}} for n in ("f", "get")]  # fmt: skip


def ordered_output(events: list[Event]) -> str:
    parts: list[str] = []
    for e in events:
        if isinstance(e, ToolCallStart):
            parts.append(e.name)
        elif isinstance(e, ToolCallDone):
            parts.append("".join(k + v for k, v in e.call.raw_arguments))
        elif not isinstance(e, ToolCallArgs):
            assert isinstance(e, ReasoningText | ContentText)
            parts.append(e.text)
    return "".join(parts)


def is_tag_deletion(source: str, output: str) -> bool:
    """Can `output` be obtained from `source` by deleting whole tag occurrences only?"""
    frontier = {(0, 0)}
    seen = set(frontier)
    while frontier:
        nxt = set()
        for i, j in frontier:
            if i == len(source) and j == len(output):
                return True
            steps = [(i + len(t), j) for t in TAGS if source.startswith(t, i)]
            if i < len(source) and j < len(output) and source[i] == output[j]:
                steps.append((i + 1, j + 1))
            for s in steps:
                if s not in seen:
                    seen.add(s)
                    nxt.add(s)
        frontier = nxt
    return False


def squeeze(text: str) -> str:
    return "".join(text.split())


@settings(FAST, max_examples=3000)
@given(
    text=noise,
    cuts=st.lists(st.integers(0, 10**6), max_size=10),
    thinking=st.booleans(),
    declared=st.booleans(),
)
def test_arbitrary_text_streams_like_one_shot_and_loses_nothing(
    text: str, cuts: list[int], thinking: bool, declared: bool
) -> None:
    tools = NOISE_TOOLS if declared else None
    events = stream(split_at(text, cuts), tools, thinking=thinking)
    one_shot = GlmStreamParser.parse(text, tools, thinking=thinking)
    calls = [(c.name, json.loads(c.arguments)) for c in one_shot.tool_calls]
    assert _canon(summary(events)) == _canon((one_shot.reasoning, one_shot.content, calls))
    assert arguments(events) == [c.arguments for c in one_shot.tool_calls]
    # whitespace may go (around names and between argument tags, whitespace-only content)
    assert is_tag_deletion(squeeze(text), squeeze(ordered_output(events)))


@settings(FAST, max_examples=2000)
@given(text=noise, cuts=st.lists(st.integers(0, 10**6), max_size=10), thinking=st.booleans())
def test_split_parsers_stream_like_one_shot_and_compose_to_the_full_parser(
    text: str, cuts: list[int], thinking: bool
) -> None:
    chunks = split_at(text, cuts)
    rp = ReasoningParser(thinking)
    r_deltas = [rp.feed(c) for c in chunks] + [rp.finish()]
    split = ReasoningParser.split(text, thinking)
    assert ("".join(d.reasoning for d in r_deltas) or None) == split.reasoning
    assert ("".join(d.content for d in r_deltas) or None) == split.content
    # reasoning parser then tool parser (how both engines chain them) == one full pass
    tp = ToolCallParser(NOISE_TOOLS)
    t_deltas = [tp.feed(c) for c in chunks] + [tp.finish()]
    t_one_shot = ToolCallParser.parse(text, NOISE_TOOLS)
    assert ("".join(d.content for d in t_deltas) or None) == t_one_shot.content
    done = [c for d in t_deltas for c in d.done]
    assert [(c.name, c.arguments) for c in done] == [
        (c.name, c.arguments) for c in t_one_shot.tool_calls
    ]
    # the OpenAI-shaped pieces: id and name once per call, arguments concatenate to the call's
    pieces: dict[int, list[Any]] = {}
    for d in t_deltas:
        for piece in d.tool_calls:
            if piece.index in pieces:
                assert piece.id is None
                assert piece.name is None
                pieces[piece.index][2] += piece.arguments
            else:
                assert piece.id
                assert piece.name
                pieces[piece.index] = [piece.id, piece.name, piece.arguments]
    assert [(e[0], e[1], e[2]) for e in pieces.values()] == [
        (c.id, c.name, c.arguments) for c in done
    ]
    tools_only = ToolCallParser.parse(split.content or "", NOISE_TOOLS)
    full = GlmStreamParser.parse(text, NOISE_TOOLS, thinking=thinking)
    assert split.reasoning == full.reasoning
    assert tools_only.content == full.content
    assert [(c.name, c.arguments) for c in tools_only.tool_calls] == [
        (c.name, c.arguments) for c in full.tool_calls
    ]
