"""Build an engine's pydantic (v2) models from fields we produced ourselves, without validating.

Streaming arguments means one output object per delta, and those are the engines' pydantic
models (vLLM's DeltaMessage + DeltaToolCall + DeltaFunctionCall per argument piece, SGLang's
StreamingParseResult + ToolCallItem). Validating them was most of what our vLLM adapter cost:
every vLLM OpenAIBaseModel runs a Python wrap validator (`__log_extra_fields__`, which only
logs unknown keys). pydantic's own API for trusted
data, `model_construct`, is slower still on these classes: with a default factory it inspects
the factory's signature on every call (pydantic 2.14, `takes_validated_data_argument`).

`unvalidated(cls, names, sample)` returns a positional constructor for one shape of call,
`cls(**dict(zip(names, values)))`, that does what `model_construct` does for those field names:
set `__dict__` (defaults for the other fields, a fresh one from each default factory),
`__pydantic_fields_set__`, `__pydantic_extra__` and `__pydantic_private__`. It first builds
`sample` both ways and keeps the fast constructor only when the class has no hook it would skip
(a post-init hook, private attributes, a root model, a data-taking default factory) and the two
objects are the same (`same_model`); otherwise it returns the validated constructor. Callers pass
only values that validation would keep as they are (a str for a `str | None` field, an int for
an int, models for model fields): that is what "trusted" means here, and what the adapters'
tests check for every shape they build. Nothing in this module imports pydantic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

_IMMUTABLE = (type(None), str, int, float, bool, bytes, tuple, frozenset)
_SLOTS = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")


def unvalidated(cls: type, names: Sequence[str], sample: Sequence[Any]) -> Callable[..., Any]:
    """A positional constructor `f(*values)` equal to `cls(**dict(zip(names, values)))` for
    values like the sample's, built without validation when that gives the same object."""
    names = tuple(names)

    def validated(*values: Any) -> Any:
        return cls(**dict(zip(names, values, strict=True)))

    try:
        fast = _fast_constructor(cls, names, validated(*sample))
    except AttributeError:  # not a pydantic v2 model
        fast = None
    if fast is None or not same_model(fast(*sample), validated(*sample)):
        logger.debug("%s: built with validation (no exact unvalidated equivalent)", cls.__name__)
        return validated
    return fast


def same_model(a: Any, b: Any) -> bool:
    """Are two pydantic models indistinguishable to a serving layer?"""
    return (
        type(a) is type(b)
        and a == b
        and list(a.__dict__.items()) == list(b.__dict__.items())  # values and field order
        and a.model_fields_set == b.model_fields_set
        and a.__pydantic_extra__ == b.__pydantic_extra__
        and a.__pydantic_private__ == b.__pydantic_private__
        and a.model_dump() == b.model_dump()
        and a.model_dump(exclude_unset=True) == b.model_dump(exclude_unset=True)
        and a.model_dump(exclude_none=True) == b.model_dump(exclude_none=True)
        and a.model_dump_json() == b.model_dump_json()
        and a.model_dump_json(exclude_unset=True) == b.model_dump_json(exclude_unset=True)
        and repr(a) == repr(b)
    )


def _fast_constructor(cls: type, names: tuple[str, ...], ref: Any) -> Callable[..., Any] | None:
    if (
        getattr(cls, "__pydantic_post_init__", None)
        or getattr(cls, "__pydantic_root_model__", False)
        or getattr(cls, "__private_attributes__", None)
        or ref.__pydantic_private__ is not None
        or ref.__pydantic_extra__  # extra fields in the sample: not a shape we build
        or set(ref.model_fields_set) != set(names)
    ):
        return None
    template = dict(ref.__dict__)  # every field, in the order validation sets them
    factories: list[tuple[str, Callable[[], Any]]] = []  # defaults each object gets afresh
    for field, info in cls.model_fields.items():  # type: ignore[attr-defined]
        if field in names:
            continue
        if info.default_factory is not None:
            if getattr(info, "default_factory_takes_data", False):
                return None  # a factory of the validated data: only validation can call it
            factories.append((field, info.default_factory))
        elif isinstance(info.default, (list, dict, set)) and not info.default:
            factories.append((field, type(info.default)))  # pydantic copies a mutable default
        elif not isinstance(info.default, _IMMUTABLE):
            return None
    fresh = tuple(factories)
    fields_set = set(names)
    extra_is_dict = ref.__pydantic_extra__ is not None  # {} under extra="allow", else None
    # What object.__setattr__ would call for the four slots, bound once (half its cost)
    setters = [_slot_setter(cls, s) for s in _SLOTS]
    if None in setters:  # not the pydantic v2 layout this shortcut knows
        return None
    set_dict, set_fields_set, set_extra, set_private = setters
    new = object.__new__

    def build(*values: Any) -> Any:
        obj = new(cls)
        data = template.copy()
        data.update(zip(names, values, strict=True))  # keys already there: field order stays
        for field, factory in fresh:
            data[field] = factory()
        set_dict(obj, data)
        set_fields_set(obj, fields_set.copy())  # per object: attribute assignment adds to it
        set_extra(obj, {} if extra_is_dict else None)
        set_private(obj, None)
        return obj

    # `build` for the commonest shapes (one field, or two), without the zip
    if len(names) == 1:
        (name,) = names

        def build1(value: Any) -> Any:
            obj = new(cls)
            data = template.copy()
            data[name] = value
            for field, factory in fresh:
                data[field] = factory()
            set_dict(obj, data)
            set_fields_set(obj, fields_set.copy())
            set_extra(obj, {} if extra_is_dict else None)
            set_private(obj, None)
            return obj

        return build1
    if len(names) == 2:
        first, second = names

        def build2(a: Any, b: Any) -> Any:
            obj = new(cls)
            data = template.copy()
            data[first] = a
            data[second] = b
            for field, factory in fresh:
                data[field] = factory()
            set_dict(obj, data)
            set_fields_set(obj, fields_set.copy())
            set_extra(obj, {} if extra_is_dict else None)
            set_private(obj, None)
            return obj

        return build2
    return build


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None] | None:
    """The `__set__` of the data descriptor that `object.__setattr__(obj, name, v)` uses."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return getattr(vars(klass)[name], "__set__", None)
    return None
