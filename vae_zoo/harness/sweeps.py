"""Sweeps: a list where a hyper-parameter takes one value makes one model variant per value.

In a suite's `[model.NAME]` table, `beta = [1, 2, 4]` expands `NAME` into `NAME[beta=1]`,
`NAME[beta=2]` and `NAME[beta=4]`; several listed keys expand into their product. A
hyper-parameter whose value is itself a list (`hidden = [200, 200]`) is swept by a list of
lists (`hidden = [[100], [200, 200]]` → `NAME[hidden=100]`, `NAME[hidden=200x200]`).

This module only expands and names; each variant's values are then checked by the zoo's
hyper-parameter validation like any other `[model.NAME]` table.
"""

from __future__ import annotations

import itertools
import math
import re

from vae_zoo.errors import UserError
from vae_zoo.settings import shown
from vae_zoo.zoo import is_number

NOT_SWEPT = ("entry",)  # keys that name what a table is, not a setting of it
# The most variants one [model.NAME] table may sweep into: each is trained on every dataset
# and seed, and checked (built on the meta device) as the suite is read.
MAX_VARIANTS = 1000


def entry_of(name: str, table: dict) -> str:
    """The zoo entry `[model.NAME]` is built from (`entry = "..."`, else NAME itself).

    Raises `UserError` when `entry` is a list: a sweep picks values of one entry's settings.
    """
    entry = table.get("entry", name)
    if isinstance(entry, list):
        raise UserError(
            f"[model.{name}] entry = {shown(entry)}: the entry cannot be swept; write one "
            "[model.NAME] table per entry, each with entry = one zoo model"
        )
    if not isinstance(entry, str):
        raise UserError(f"[model.{name}] entry = {shown(entry)}; expected the name of a zoo "
                        "model")
    return entry


def expand_sweeps(name: str, table: dict, list_valued_keys) -> list[tuple[str, dict, dict]]:
    """The variants of `[model.NAME]`: (variant name, overrides, swept values) for each.

    `list_valued_keys` are the hyper-parameters whose value is a list (such as `hidden` of an
    MLP): a plain list is one value there, a list of lists a sweep. Elsewhere any list is a
    sweep. Variants come in product order (the first swept key outermost) and are named
    `NAME[k1=v1,k2=v2]` with the swept keys in table order; `overrides` is `table` with each
    swept key set to one value. A table without a sweep gives `[(NAME, table, {})]`.
    Raises `UserError` naming the table and key for an empty, mixed, repeated or nested sweep.
    """
    entry_of(name, table)
    sweeps = {
        key: sweep_values(name, key, value, key in list_valued_keys)
        for key, value in table.items()
        if key not in NOT_SWEPT and is_sweep(value, key in list_valued_keys)
    }
    if not sweeps:
        return [(name, dict(table), {})]
    count = math.prod(len(values) for values in sweeps.values())
    if count > MAX_VARIANTS:
        sizes = " x ".join(f"{len(values)} ({key})" for key, values in sweeps.items())
        raise UserError(f"[model.{name}] sweeps into {sizes} = {count:,} variants; at most "
                        f"{MAX_VARIANTS:,} per table: sweep fewer values")
    variants = []
    for combination in itertools.product(*sweeps.values()):
        swept = dict(zip(sweeps, combination, strict=True))
        label = ",".join(f"{key}={format_value(value)}" for key, value in swept.items())
        variants.append((f"{name}[{label}]", {**table, **swept}, swept))
    return variants


def is_sweep(value, list_valued: bool) -> bool:
    """Whether a table value lists several values of its key rather than giving one."""
    if not isinstance(value, list):
        return False
    # An empty list is a sweep (refused as empty) even where one value is a list.
    return not list_valued or not value or any(isinstance(v, list) for v in value)


def sweep_values(name: str, key: str, values: list, list_valued: bool) -> list:
    """`values` checked as one sweep of `key`: non-empty, one type, no repeats, no nesting."""
    where = f"[model.{name}] {key} = {shown(values)}"
    if not values:
        one = "[200, 200]" if list_valued else "4"
        many = "[[100], [200, 200]]" if list_valued else "[1, 4]"
        raise UserError(
            f"{where} is an empty list; give one value ({key} = {one}) or sweep several "
            f"({key} = {many})"
        )
    if list_valued and not all(isinstance(v, list) for v in values):
        raise UserError(
            f"{where} mixes lists and single values; '{key}' takes a list, so a sweep of it is "
            f"a list of lists, e.g. {key} = "
            f"{shown([v if isinstance(v, list) else [v] for v in values])}"
        )
    if not list_valued and any(isinstance(v, list) for v in values):
        raise UserError(
            f"{where} nests a list; '{key}' takes one value, so a sweep of it is a plain list "
            "of values, e.g. [1, 4]"
        )
    kinds = list(dict.fromkeys(value_kind(v) for v in values))
    if len(kinds) > 1:
        raise UserError(
            f"{where} mixes {' and '.join(kinds)}; a sweep lists values of one type "
            "(integers and decimals may mix)"
        )
    for index, value in enumerate(values):
        if value in values[:index]:
            raise UserError(f"{where} repeats {format_value(value)}; list each value once")
    return values


def value_kind(value) -> str:
    """The type of a swept value in words; ints and floats are both numbers."""
    if is_number(value):
        return "numbers"
    kinds = {bool: "booleans", str: "strings", list: "lists", dict: "tables"}
    return kinds.get(type(value), type(value).__name__)


def format_value(value) -> str:
    """A value as it appears in a variant name: as the user wrote it in TOML.

    Integers as `4`, floats in Python's shortest repr (`4.0`, `0.5`, `1e-05`), booleans as
    `true`/`false`, strings as they are, lists joined with `x` (`[200, 200]` → `200x200`).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "x".join(format_value(v) for v in value)
    return str(value)


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


def slug(model_name: str) -> str:
    """A directory-safe form of a model name, using only `[A-Za-z0-9._=-]`.

    `beta-vae[beta=1,k=5]` → `beta-vae_beta=1_k=5`; `mlp-vae[hidden=100x100]` →
    `mlp-vae_hidden=100x100`; a name without a sweep is unchanged when already safe. `[` and
    `,` become `_`, the closing `]` is dropped, the `+` of a float's exponent is dropped
    (`1e+20` → `1e20`) and any other unsafe character becomes `-`.

    Injective on the names sweeps generate, and on the model names they start from, assuming
    (as for every zoo entry, choice and hyper-parameter today) that a base model name uses only
    letters, digits, `.` and `-`; a hyper-parameter key only letters, digits and `_`; and a
    string value starts with a letter and uses only letters, digits, `.` and `-`. Then the base
    ends at the first `_`, each key at the next `=` and each value at the next `_`, and a
    number's `+` comes back after its `e`. Outside these assumptions the result is still safe
    but two names may share it.
    """
    if model_name.endswith("]") and "[" in model_name:
        base, _, label = model_name[:-1].partition("[")
        model_name = f"{base}_{label.replace(',', '_')}"
    return _UNSAFE.sub("-", model_name.replace("+", ""))
