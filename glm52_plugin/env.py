"""The one truthiness rule for the package's ``GLM52_*`` on/off environment switches."""

from __future__ import annotations

import os

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def env_flag(name: str, default: bool = False) -> bool:
    """Read the switch ``name``: unset -> ``default``; 1/true/yes/on -> True; 0/false/no/off or
    empty -> False (case-insensitive, surrounding spaces ignored); anything else -> ValueError."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"environment variable {name}={raw!r} is not a switch value: "
        "use 1/true/yes/on or 0/false/no/off"
    )
