"""Upstream glm47 / glm45 parser test cases, ported as data (facts only, no engine code).

Sources (read at the commits find_files listed):
  vllm   tests/tool_parsers/test_glm47_moe_tool_parser.py   (tool parser, content only)
  vllm   tests/parser/engine/test_glm47_stray_tool_call.py  (stray <tool_call>, issue #60703)
  vllm   tests/parser/engine/test_glm47_moe.py              (is_reasoning_end / extract_content_ids)
  vllm   tests/reasoning/test_glm4_moe_reasoning_parser.py  (glm45 reasoning)
  sglang test/.../test_glm47_moe_detector.py                (Glm47MoeDetector detect_and_parse,
                                                             parse_streaming_increment, MTP)
  sglang srt/parser/reasoning_parser.py Glm45Detector       (behaviour read from that file,
                                                             SGLang 0.5.23)

mode: "tools" = tool parser on reasoning-free content (what both engines hand the tool parser),
"reasoning" = reasoning parser alone, "full" = one pass over the whole turn.
`calls` lists (name, arguments-as-Python); None for content/reasoning means "absent".
`chunks`, when given, is the upstream streaming split. `differs` says why we deliberately
disagree with the upstream expectation (the upstream value is kept in `upstream`).
The SGLang tool fixtures (create_basic_tools / create_complex_tools) are re-declared here with
the properties their assertions rely on.
"""

from __future__ import annotations

from typing import Any


def _fn(name: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    params = {"type": "object", "properties": props} if props is not None else {}
    return {"type": "function", "function": {"name": name, "parameters": params}}


VLLM_TOOLS = [
    _fn("get_current_date", None),
    _fn("get_weather", {"city": {"type": "string"}, "date": {"type": "string"}}),
]
VLLM_STRAY_TOOLS = [_fn("get_weather", None)]
SGLANG_TOOLS = [
    _fn("get_weather", {"city": {"type": "string"}, "date": {"type": "string"}}),
    _fn("get_time", None),
    _fn("calculate", {"expression": {"type": "string"}, "precision": {"type": "integer"}}),
    _fn("ask_user_question", {"questions": {"type": "array"}}),
    _fn("todowrite", {"todos": {"type": "array", "items": {"type": "object"}}}),
]
TOOLSETS = {"vllm": VLLM_TOOLS, "vllm_stray": VLLM_STRAY_TOOLS, "sglang": SGLANG_TOOLS}

W = "<tool_call>get_weather<arg_key>city</arg_key><arg_value>{}</arg_value></tool_call>"

TOOL_CASES: list[dict[str, Any]] = [
    # ---- vLLM test_glm47_moe_tool_parser.py
    dict(id="vllm_no_tool_call", tools="vllm", text="This is a plain response.",
         content="This is a plain response.", calls=[]),
    dict(id="vllm_zero_arg_inline", tools="vllm", text="<tool_call>get_current_date</tool_call>",
         content=None, calls=[("get_current_date", {})]),
    dict(id="vllm_zero_arg_newline", tools="vllm",
         text="<tool_call>get_current_date\n</tool_call>", content=None,
         calls=[("get_current_date", {})]),
    dict(id="vllm_args_same_line", tools="vllm", text=W.format("Beijing"), content=None,
         calls=[("get_weather", {"city": "Beijing"})]),
    dict(id="vllm_args_with_newlines", tools="vllm",
         text="<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Beijing</arg_value>\n</tool_call>",
         content=None, calls=[("get_weather", {"city": "Beijing"})]),
    dict(id="vllm_content_before", tools="vllm",
         text="Checking.<tool_call>get_current_date</tool_call>", content="Checking.",
         calls=[("get_current_date", {})]),
    dict(id="vllm_multiple", tools="vllm", text=W.format("Beijing") + W.format("Shanghai"),
         content=None, calls=[("get_weather", {"city": "Beijing"}), ("get_weather", {"city": "Shanghai"})]),
    dict(id="vllm_whitespace_content_none", tools="vllm",
         text="  \n  <tool_call>get_current_date</tool_call>", content=None,
         calls=[("get_current_date", {})]),
    dict(id="vllm_streaming_with_args", tools="vllm",
         chunks=["<tool_call>", "get_weather\n", "<arg_key>city</arg_key>", "<arg_value>", "Beijing",
                 "</arg_value>", "</tool_call>"],
         content=None, calls=[("get_weather", {"city": "Beijing"})]),
    dict(id="vllm_streaming_no_args", tools="vllm",
         chunks=["<tool_call>", "get_current_date", "</tool_call>"], content=None,
         calls=[("get_current_date", {})]),
    dict(id="vllm_prefix_only_name_is_not_a_call", tools="vllm",
         text="<tool_call>get<arg_key>city</arg_key><arg_value>Beijing</arg_value></tool_call>",
         content="<tool_call>get<arg_key>city</arg_key><arg_value>Beijing</arg_value></tool_call>",
         calls=[], upstream="no tool call; the text is dropped",
         differs="an undeclared name is not a call; we keep its text as content instead of dropping it"),
    # ---- vLLM test_glm47_stray_tool_call.py (#60703)
    dict(id="vllm_stray_then_real_call", tools="vllm_stray",
         text="Fetching. I will issue a <tool_call>get_weather</tool_call>",
         content="Fetching. I will issue a ", calls=[("get_weather", {})]),
    dict(id="vllm_two_stray_then_real", tools="vllm_stray",
         text="text <tool_call><tool_call>get_weather</tool_call>", content="text <tool_call>",
         calls=[("get_weather", {})], upstream="content not asserted; the phantom opener is dropped",
         differs="text is never dropped: the stray opener stays in the content"),
    dict(id="vllm_lone_stray_tag", tools="vllm_stray", text="text <tool_call>",
         content="text <tool_call>", calls=[]),
    dict(id="vllm_clean_call_unchanged", tools="vllm_stray",
         text="<tool_call>get_weather</tool_call>", content=None, calls=[("get_weather", {})]),
    dict(id="vllm_stray_with_args", tools="vllm_stray",
         text="prose <tool_call><tool_call>get_weather<arg_key>city</arg_key><arg_value>BJ</arg_value></tool_call>",
         content="prose <tool_call>", calls=[("get_weather", {"city": "BJ"})],
         upstream="content not asserted", differs="the stray opener stays in the content"),
    # ---- SGLang Glm47MoeDetector
    dict(id="sglang_single_tool_call_simple", tools="sglang", text=W.format("北京"), content=None,
         calls=[("get_weather", {"city": "北京"})]),
    dict(id="sglang_single_tool_call_multiple_args", tools="sglang",
         text="<tool_call>get_weather<arg_key>city</arg_key><arg_value>北京</arg_value>"
              "<arg_key>date</arg_key><arg_value>2024-06-27</arg_value></tool_call>",
         content=None, calls=[("get_weather", {"city": "北京", "date": "2024-06-27"})]),
    dict(id="sglang_no_arg_function", tools="sglang", text="<tool_call>get_time</tool_call>",
         content=None, calls=[("get_time", {})]),
    dict(id="sglang_multiple_tool_calls", tools="sglang", text=W.format("北京") + W.format("上海"),
         content=None, calls=[("get_weather", {"city": "北京"}), ("get_weather", {"city": "上海"})]),
    dict(id="sglang_normal_text_before_tool", tools="sglang",
         text="Let me check the weather for you. " + W.format("Tokyo"),
         content="Let me check the weather for you. ", calls=[("get_weather", {"city": "Tokyo"})],
         upstream="Let me check the weather for you.",
         differs="SGLang strips normal text; we keep content verbatim, as vLLM does"),
    dict(id="sglang_normal_text_between_tools", tools="sglang",
         text="First query: " + W.format("北京") + " Second query: " + W.format("上海"),
         content="First query:  Second query: ",
         calls=[("get_weather", {"city": "北京"}), ("get_weather", {"city": "上海"})]),
    dict(id="sglang_no_tool_call", tools="sglang",
         text="This is just regular text without any tool calls.",
         content="This is just regular text without any tool calls.", calls=[]),
    dict(id="sglang_array_argument", tools="sglang",
         text='<tool_call>ask_user_question<arg_key>questions</arg_key><arg_value>[{"question": '
              '"What language?", "header": "Lang", "multiSelect": false, "options": [{"label": '
              '"Python", "description": "Simple"}]}]</arg_value></tool_call>',
         content=None,
         calls=[("ask_user_question", {"questions": [{"question": "What language?", "header": "Lang",
                 "multiSelect": False, "options": [{"label": "Python", "description": "Simple"}]}]})]),
    dict(id="sglang_number_argument", tools="sglang",
         text="<tool_call>calculate<arg_key>expression</arg_key><arg_value>2+2</arg_value>"
              "<arg_key>precision</arg_key><arg_value>3</arg_value></tool_call>",
         content=None, calls=[("calculate", {"expression": "2+2", "precision": 3})]),
    dict(id="sglang_streaming_name_sent_once_arg_key_arrives", tools="sglang",
         chunks=["<tool_call>", "get_weather", "<arg_key>",
                 "city</arg_key><arg_value>Beijing</arg_value>", "</tool_call>"],
         name_at_chunk=2, content=None, calls=[("get_weather", {"city": "Beijing"})]),
    dict(id="sglang_streaming_incremental_arguments", tools="sglang",
         chunks=["<tool_call>get_weather<arg_key>", "city</arg_key>", "<arg_value>", "北", "京",
                 "</arg_value>", "</tool_call>"],
         content=None, calls=[("get_weather", {"city": "北京"})]),
    dict(id="sglang_streaming_no_arg_function", tools="sglang",
         chunks=["<tool_call>get_time", "</tool_call>"], content=None, calls=[("get_time", {})]),
    dict(id="sglang_streaming_normal_text_before_tool", tools="sglang",
         chunks=["Let me check: ", W.format("北京")], first_chunk_content="Let me check: ",
         content="Let me check: ", calls=[("get_weather", {"city": "北京"})]),
    dict(id="sglang_streaming_todowrite_array_argument", tools="sglang",
         chunks=["<tool_call>todowrite<arg_key>todos</arg_key><arg_value>",
                 '[{"content":"inspect","status":"in_progress","priority":"high"}]',
                 "</arg_value></tool_call>"],
         content=None,
         calls=[("todowrite", {"todos": [{"content": "inspect", "status": "in_progress", "priority": "high"}]})]),
    dict(id="sglang_mtp_text_and_tool_same_chunk", tools="sglang",
         chunks=["让我查一下天气：" + W.format("北京")], content="让我查一下天气：",
         calls=[("get_weather", {"city": "北京"})]),
    dict(id="sglang_mtp_partial_then_complete", tools="sglang",
         chunks=["<tool_call>get_weather<arg_key>city</arg_key><arg_value>北", "京</arg_value></tool_call>"],
         content=None, calls=[("get_weather", {"city": "北京"})]),
    dict(id="sglang_mtp_multiple_tools_single_chunk", tools="sglang",
         chunks=[W.format("北京") + W.format("上海")], content=None,
         calls=[("get_weather", {"city": "北京"}), ("get_weather", {"city": "上海"})]),
    dict(id="sglang_truncated_call_keeps_name_and_streamed_value", tools="sglang",
         text="<tool_call>get_weather<arg_key>city</arg_key><arg_value>San Franc",
         content=None, calls=[("get_weather", {"city": "San Franc"})],
         upstream="no calls (content after finish not asserted)",
         differs="a call cut off by max_tokens keeps its name and the arguments streamed so far "
                 "(the string value was already sent; nothing is retracted)"),
]  # fmt: skip

# glm45 reasoning, thinking on (the default). `end` is is_reasoning_end over the output tokens.
REASONING_CASES: list[dict[str, Any]] = [
    dict(id="vllm_with_think", text="<think>This is a reasoning section</think>This is the rest",
         reasoning="This is a reasoning section", content="This is the rest", end=True),
    dict(id="vllm_without_think", text="This is the rest", reasoning="This is the rest",
         content=None, end=False, upstream="reasoning None, content 'This is the rest'",
         differs="GLM-5's generation prompt opens <think>, so unclosed text is reasoning "
                 "(vLLM 0.33's glm47_moe engine also starts in REASONING)"),
    dict(id="vllm_complete_reasoning", text="<think>This is a reasoning section</think>",
         reasoning="This is a reasoning section", content=None, end=True),
    dict(id="vllm_multiline_reasoning",
         text="<think>This is a reasoning\nsection</think>This is the rest\nThat",
         reasoning="This is a reasoning\nsection", content="This is the rest\nThat", end=True),
    dict(id="vllm_empty_think_block", text="<think></think>This is the rest", reasoning=None,
         content="This is the rest", end=True),
    dict(id="vllm_empty_think_block_no_content", text="<think></think>", reasoning=None,
         content=None, end=True),
    dict(id="vllm_only_open_tag", text="<think>This is a reasoning section",
         reasoning="This is a reasoning section", content=None, end=False,
         upstream="non-streaming: reasoning None, content '<think>This is a reasoning section'",
         differs="streaming and one-shot must agree; we give upstream's streaming answer to both"),
    # SGLang Glm45Detector (thinks internally; <tool_call> interrupts reasoning)
    dict(id="sglang_no_end_is_truncated_reasoning", text="still thinking", reasoning="still thinking",
         content=None, end=False),
    dict(id="sglang_tool_call_interrupts_reasoning",
         text="I should call it<tool_call>get_time</tool_call>", reasoning="I should call it",
         content="<tool_call>get_time</tool_call>", end=True),
    dict(id="sglang_end_tag_splits", text="reason</think>answer", reasoning="reason",
         content="answer", end=True),
]  # fmt: skip

# vLLM tests/parser/engine/test_glm47_moe.py, token ids replaced by token texts ("T" = text).
TS, TE, CS, CE = "<think>", "</think>", "<tool_call>", "</tool_call>"
ASST, OBS, USER = "<|assistant|>", "<|observation|>", "<|user|>"
IS_REASONING_END_CASES: list[tuple[str, list[str], bool, bool]] = [
    ("open_reasoning", [TS, "T"], True, False),
    ("think_end", [TS, "T", TE, "T"], True, True),
    ("tool_call_without_think_end", [TS, "T", CS, "T"], True, True),
    ("previous_turn_tool_call_ignored", [TS, "T", CS, "T", CE, OBS, "T", ASST], True, False),
    ("previous_turn_think_end_ignored", [TS, "T", TE, "T", USER, "T", ASST], True, False),
    ("empty_input", [], True, False),
    ("thinking_disabled", [TS, "T"], False, True),
]
# (id, tokens, thinking, index where the content starts)
CONTENT_START_CASES: list[tuple[str, list[str], bool, int]] = [
    ("think_end_wins_over_later_tool_call", [TS, "T", TE, "20", "21", CS, "30", CE], True, 3),
    ("every_tool_call_after_think_end_kept", [TE, "20", CS, "30", CE, "21", CS, "31", CE], True, 1),
    ("falls_back_to_tool_call", [TS, "T", CS, "30", CE], True, 2),
    ("falls_back_to_first_tool_call_of_turn", [TS, "T", CS, "30", CE, CS, "31", CE], True, 2),
    ("previous_turn_tool_call_ignored", [CS, "30", CE, OBS, "T", ASST, TS, "T"], True, 0),
    ("no_markers_returns_input_ids", ["20", "21"], True, 0),
    ("thinking_disabled", [TS, "T", CS], False, 0),
]
# vLLM test_glm4_moe_reasoning_parser.py REASONING_END_TEST_CASES: rendered prompts.
PROMPT_CASES: list[tuple[str, str, bool]] = [
    ("still_reasoning", "[gMASK]<sop><|system|>\nYou are a helpful assistant.<|user|>\nWhat is the "
     "capital of France?<|assistant|>\n<think>The user is asking for the capital of", False),
    ("done_reasoning", "[gMASK]<sop><|system|>\nYou are a helpful assistant.<|user|>\nWhat is the "
     "capital of France?<|assistant|>\n<think>The user is asking for the capital of France."
     "</think>\nThe capital of France is Paris.", True),
    ("multi_turn_still_reasoning", "[gMASK]<sop><|system|>\nYou are a helpful assistant.<|user|>\n"
     "What is the capital of France?<|assistant|>\n<think></think>\nThe capital of France is Paris."
     "<|user|>\nWhat about Chile?<|assistant|>\n<think>The user is asking for the capital of", False),
    ("multi_turn_done_reasoning", "[gMASK]<sop><|system|>\nYou are a helpful assistant.<|user|>\n"
     "What is the capital of France?<|assistant|>\n<think></think>\nThe capital of France is Paris."
     "<|user|>\nWhat about Chile?<|assistant|>\n<think>The user is asking for the capital of Chile."
     "</think>\nThe capital of Chile is Santiago.", True),
]  # fmt: skip
