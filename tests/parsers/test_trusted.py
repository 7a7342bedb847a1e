"""parsers.trusted.unvalidated against pydantic's own validating constructor.

The engines' delta classes are tested in tests/vllm and tests/sglang; here, small models with
each feature the shortcut must reproduce (defaults, default factories, mutable defaults, extra
fields) or must refuse to skip (a transforming validator, private attributes, a post-init hook).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

pytest.importorskip("pydantic", reason="pydantic not installed (the engines' model library)")

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from glm52_plugin.parsers.trusted import same_model, unvalidated


class Piece(BaseModel):
    name: str | None = None
    arguments: str | None = None


class Call(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    index: int
    function: Piece | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    content: str | None = None
    calls: list[Call] = Field(default_factory=list)
    tags: list[str] = []  # a mutable default: pydantic copies it per object

    @model_validator(mode="wrap")
    @classmethod
    def _count(cls, data: Any, handler: Any) -> Any:  # like vLLM's logging wrap validator
        Message.validations += 1
        return handler(data)

    validations: ClassVar[int] = 0


class Shouting(BaseModel):
    text: str

    @field_validator("text")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


class WithPrivate(BaseModel):
    text: str
    _seen: int = PrivateAttr(default=0)


class WithPostInit(BaseModel):
    text: str
    length: int = 0

    def model_post_init(self, context: Any) -> None:
        self.length = len(self.text)


def _dumps(m: BaseModel) -> tuple[Any, ...]:
    return (
        m.model_dump(),
        m.model_dump(exclude_unset=True),
        m.model_dump_json(),
        m.model_dump_json(exclude_unset=True, exclude_none=True),
        m.model_fields_set,
        m.__pydantic_extra__,
    )


@pytest.mark.parametrize("text", ["", "x", 'é中 "q" \\ \n <b>', "}"])
def test_equal_to_the_validated_object_for_every_shape(text: str) -> None:
    piece = unvalidated(Piece, ["arguments"], ["{"])
    call = unvalidated(Call, ["index", "function"], [0, Piece(arguments="{")])
    three = unvalidated(Call, ["index", "id", "function"], [0, "c", Piece(arguments="{")])
    message = unvalidated(Message, ["content"], ["x"])
    calls_message = unvalidated(Message, ["calls"], [[Call(index=0)]])
    cases = [
        (piece(text), Piece(arguments=text)),
        (call(3, piece(text)), Call(index=3, function=Piece(arguments=text))),
        (three(1, text, piece(text)), Call(index=1, id=text, function=Piece(arguments=text))),
        (message(text), Message(content=text)),
        (calls_message([call(0, piece(text))]), Message(calls=[Call(index=0, function=Piece(arguments=text))])),
    ]  # fmt: skip
    for built, ref in cases:
        assert _dumps(built) == _dumps(ref)
        assert built == ref
        assert repr(built) == repr(ref)
        assert same_model(built, ref)


def test_skips_validation() -> None:
    message = unvalidated(Message, ["content"], ["x"])
    before = Message.validations
    message("a")
    assert Message.validations == before


def test_each_object_owns_its_mutable_state() -> None:
    message = unvalidated(Message, ["content"], ["x"])
    a, b = message("a"), message("b")
    a.calls.append(Call(index=0))
    a.tags.append("t")
    a.content = None  # assignment marks the field set on `a` only
    a.extra_key = 1  # extra="allow": lands in a's own __pydantic_extra__
    assert b.calls == []
    assert b.tags == []
    assert b.model_fields_set == {"content"}
    assert b.__pydantic_extra__ == {}
    ref = Message(content="a")
    ref.calls.append(Call(index=0))
    ref.tags.append("t")
    ref.content = None
    ref.extra_key = 1
    assert _dumps(a) == _dumps(ref)


@pytest.mark.parametrize(
    ("cls", "value", "expected"),
    [(Shouting, "hi", "HI"), (WithPrivate, "hi", "hi"), (WithPostInit, "hi", "hi")],
)
def test_falls_back_to_validation_where_it_would_differ(
    cls: type, value: str, expected: str
) -> None:
    build = unvalidated(cls, ["text"], ["sample"])
    built = build(value)
    ref = cls(text=value)
    assert built.text == expected
    assert _dumps(built) == _dumps(ref)
    assert built.__pydantic_private__ == ref.__pydantic_private__
