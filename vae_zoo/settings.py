"""Typed settings declared beside the code that uses them, and the one validator that checks them.

Every piece of a model (architecture, likelihood, prior, objective, gradient estimator) declares
its settings as a frozen dataclass whose fields carry a type and a default, and, where a type is
not enough, a constraint in the field's metadata:

    @dataclass(frozen=True)
    class ElboSettings:
        beta: float = setting(1.0, minimum=0.0, doc="weight of the KL term")

A suite's overrides are checked against these declarations by `check_value`; an unknown key or a
value of the wrong type is a `UserError` that names the key and what it expects.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from vae_zoo.errors import UserError


def setting(default, *, minimum: float | None = None, positive: bool = False,
            choices: tuple = (), doc: str = ""):
    """A dataclass field with its constraint: `minimum` (inclusive), `positive` (> 0), or
    `choices` (the strings it may take; with a numeric type, the strings it may take besides a
    number)."""
    metadata = {"minimum": minimum, "positive": positive, "choices": tuple(choices), "doc": doc}
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
    problem = f"{where}: setting '{key}' = {value!r}"
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
        if not (isinstance(value, list) and value and all(is_int(v) and v > 0 for v in value)):
            raise UserError(f"{problem}; expected a list of positive integers")
        return list(value)
    if isinstance(value, str) and value in choices:  # e.g. gaussian_scale = "learned"
        return value
    numeric = int if kind is int else float
    noun = "integer" if numeric is int else "number"
    ok = is_int(value) if numeric is int else is_number(value)
    if meta.get("positive"):
        ok, expected = ok and value > 0, f"a positive {noun}"
    elif meta.get("minimum") is not None:
        ok, expected = ok and value >= meta["minimum"], f"a {noun} >= {meta['minimum']}"
    else:
        expected = f"an {noun}" if numeric is int else f"a {noun}"
    if not ok:
        alternatives = "".join(f' or "{choice}"' for choice in choices)
        raise UserError(f"{problem}; expected {expected}{alternatives}")
    return numeric(value)


def type_hints(settings_class) -> dict:
    return typing.get_type_hints(settings_class)


def describe(settings_class) -> list[tuple[str, object, str]]:
    """(name, default, doc) of each declared setting, for `vae-zoo list` and the docs."""
    return [(f.name, getattr(settings_class(), f.name), f.metadata.get("doc", ""))
            for f in dataclasses.fields(settings_class)]


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
