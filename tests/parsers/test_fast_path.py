"""The premise of GlmStreamParser.feed's fast path, checked against the tag tables."""

from __future__ import annotations

from glm52_plugin.parsers.arguments import PHASE_TAGS, Phase
from glm52_plugin.parsers.stream import FAST_PATH_LEADS, GlmStreamParser, State


def test_tags_of_fast_path_states_start_with_the_leads() -> None:
    # The fast path serves reasoning, content and a streamed string value: every tag those
    # states recognise must start with one of the leads, or text holding it would skip it.
    reasoning = GlmStreamParser()
    assert reasoning.state is State.REASONING
    content = GlmStreamParser(thinking=False)
    assert content.state is State.CONTENT
    tags = {*reasoning._tags(), *content._tags(), *PHASE_TAGS[Phase.VALUE]}
    assert tags  # the tables are not empty
    assert all(tag.startswith(FAST_PATH_LEADS) for tag in tags)
