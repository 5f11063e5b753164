"""Typed settings declared beside the code that uses them, and the one validator that checks them.

Every piece of a model (architecture, likelihood, prior, objective, gradient estimator) declares
its settings as a frozen dataclass whose fields carry a type and a default, and, where a type is
not enough, a constraint in the field's metadata:

    @dataclass(frozen=True)
    class ElboSettings:
        beta: float = setting(1.0, minimum=0.0, doc="weight of the KL term")

A suite's overrides are checked against these declarations by `check_value`; an unknown key, a
value of the wrong type or out of its range (every number must be finite: TOML has `inf` and
`nan`) is a `UserError` that names the key and what it expects.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field

from vae_zoo.errors import UserError

# The most entries of a list-valued setting (the hidden widths or channels of a network).
MAX_LIST_LENGTH = 32


def setting(default, *, minimum: float | None = None, maximum: float | None = None,
            positive: bool = False, choices: tuple = (), doc: str = ""):
    """A dataclass field with its constraints, all of which a value must meet: `minimum`
    (inclusive), `positive` (> 0), `maximum` (inclusive; of every entry for a list of
    integers), and `choices` (the strings it may take; with a numeric type, the strings it may
    take besides a number). A number must also be finite."""
    metadata = {"minimum": minimum, "maximum": maximum, "positive": positive,
                "choices": tuple(choices), "doc": doc}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class NoSettings:
    """A piece without settings."""


def declared(settings_class) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(settings_class)}


def defaults(settings_class) -> dict:
    """The declared defaults of a settings dataclass, as plain values."""
    return dataclasses.asdict(settings_class())


def check_value(where: str, key: str, value, declaration: dataclasses.Field,
                owner_types: dict):
    """`value` converted to the declared type, or `UserError` naming `key` and what it expects.
    `owner_types` is `typing.get_type_hints` of the dataclass holding `declaration`."""
    kind = owner_types[key]
    meta = declaration.metadata
    choices = meta.get("choices", ())
    problem = f"{where}: setting '{key}' = {shown(value)}"
    if kind is str:
        if not isinstance(value, str) or (choices and value not in choices):
            raise UserError(f"{problem}; valid choices: {', '.join(choices)}" if choices
                            else f"{problem}; expected a string")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{problem}; expected true or false")
        return value
    if typing.get_origin(kind) is list:
        maximum = meta.get("maximum")
        if not (isinstance(value, list) and 0 < len(value) <= MAX_LIST_LENGTH
                and all(in_range(v, int, maximum=maximum, positive=True) for v in value)):
            raise UserError(f"{problem}; expected a list of "
                            f"{describe_range(int, maximum=maximum, positive=True, plural=True)}"
                            f" (1 to {MAX_LIST_LENGTH} of them)")
        return list(value)
    if isinstance(value, str) and value in choices:  # e.g. gaussian_scale = "learned"
        return value
    numeric = int if kind is int else float
    bounds = {"minimum": meta.get("minimum"), "maximum": meta.get("maximum"),
              "positive": bool(meta.get("positive"))}
    if not in_range(value, numeric, **bounds):
        expected = describe_range(numeric, **bounds,
                                  alternatives=[f'"{choice}"' for choice in choices])
        raise UserError(f"{problem}; expected {expected}{non_finite(value)}")
    return numeric(value)


def in_range(value, numeric: type, minimum=None, maximum=None, *,
             positive: bool = False) -> bool:
    """Whether `value` is an integer (`numeric` int) or a finite number (float) that is
    `positive` (> 0) where asked, and within `minimum` and `maximum` (inclusive) where given."""
    if not (is_int(value) if numeric is int else is_number(value) and math.isfinite(value)):
        return False
    return ((not positive or value > 0) and (minimum is None or value >= minimum)
            and (maximum is None or value <= maximum))


def describe_range(numeric: type, minimum=None, maximum=None, *, positive: bool = False,
                   plural: bool = False, alternatives=()) -> str:
    """What `in_range` accepts, in words: "a positive integer", "a positive integer <= 64",
    "a number >= 0.0 and <= 1.0"; with `alternatives` (e.g. '"learned"') they follow the kind
    of number, and its bounds come last: 'a positive number or "learned" (<= 1000.0)'."""
    noun = ("integer" if numeric is int else "number") + ("s" if plural else "")
    article = "" if plural else "an " if numeric is int and not positive else "a "
    kind = f"{article}{'positive ' if positive else ''}{noun}"
    limits = " and ".join(([f">= {minimum}"] if minimum is not None and not (
        positive and minimum <= 0) else []) + ([f"<= {maximum}"] if maximum is not None else []))
    if alternatives:
        return f"{kind}{''.join(f' or {choice}' for choice in alternatives)}" + (
            f" ({limits})" if limits else "")
    return f"{kind} {limits}" if limits else kind


def non_finite(value) -> str:
    """A note for a message when `value` is TOML's inf or nan, else ""."""
    if is_number(value) and not math.isfinite(value):
        return " (inf and nan are not accepted)"
    return ""


def type_hints(settings_class) -> dict:
    return typing.get_type_hints(settings_class)


def describe(settings_class) -> list[tuple[str, object, str]]:
    """(name, default, doc) of each declared setting, for `vae-zoo list` and the docs."""
    return [(f.name, getattr(settings_class(), f.name), f.metadata.get("doc", ""))
            for f in dataclasses.fields(settings_class)]


def shown(value, limit: int = 60) -> str:
    """`repr(value)` for a message, cut to about `limit` characters."""
    try:
        text = repr(value)
    except RecursionError:
        return "(a value nested too deeply to show)"
    return text if len(text) <= limit else f"{text[:limit - 5]}...{text[-2:]}"


def machine_memory() -> int:
    """The machine's physical memory in bytes (what implausible sizes are measured against)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
