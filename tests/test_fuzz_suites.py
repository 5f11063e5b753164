"""Fuzzing suite files: whatever bytes a suite file holds, `vae-zoo run --dry-run` either plans
it (exit 0) or refuses it with one message (exit 2): never a traceback, and nothing is written
outside the results directory.

Each example starts from a small valid suite and applies a few mutations drawn by hypothesis:
a value replaced by one of another type or out of range (0, negative, huge, inf, nan), names
from the awkward ones ('/', '..', unicode, spaces, empty), keys dropped or added, values nested
in lists or tables, then sometimes the bytes themselves (truncated, random bytes inserted,
invalid UTF-8). Dataset sizes are drawn from boundary values only (0, 1, 7, 8, 16, 257,
2**31, ...), so that a mutated suite the validation accepts stays cheap to plan: a dry run
loads every dataset to fingerprint it.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vae_zoo.cli import main

CIRCLES = {
    "datasets": ["circles"],
    "models": ["mlp-vae", "iwae"],
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 50},
    "eval": {"nll_samples": 10},
    "dataset": {"circles": {"side": 12, "train_size": 200, "val_size": 50, "test_size": 50}},
    "model": {"mlp-vae": {"latent_dim": 3, "hidden": [16]}, "iwae": {"k": 3}},
}
DIGITS = {
    "name": "digits-fuzz",
    "datasets": ["digits"],
    "models": ["beta-vae", "small"],
    "seeds": [0],
    "train": {"epochs": 1},
    "dataset": {"digits": {"test_size": 100, "val_size": 100}},
    "model": {"beta-vae": {"beta": [1.0, 2.0]}, "small": {"entry": "iwae", "hidden": [8]}},
    "reference": {"digits": {"small": {"test_nll": 30.0}}},
    "report": {"baseline": "small"},
}
BOTH = {
    "description": "both small datasets",
    "datasets": ["circles", "digits"],
    "models": ["mlp-vae"],
    "seeds": [3],
    "train": {"epochs": 1},
    "eval": {"nll_samples": 5, "fid_samples": 20},
    "dataset": {"circles": {"side": 8, "train_size": 100, "val_size": 20, "test_size": 20},
                "digits": {"test_size": 50}},
    "slurm": {"time_min": 5},
}
BASES = [CIRCLES, DIGITS, BOTH]

# Dataset sizes only from boundary values: none the validation accepts makes a large dataset.
SIZE_KEYS = ("train_size", "val_size", "test_size", "side")
SIZES = [-1, 0, 1, 2, 3, 7, 8, 9, 16, 257, 2**31 - 1, 2**31, 2**63 - 1, 10**12]
KEYS = ["name", "description", "project", "datasets", "models", "seeds", "train", "eval",
        "dataset", "model", "reference", "report", "slurm", "epochs", "batch_size",
        "learning_rate", "adam_eps", "lr_schedule", "patience", "max_epochs", "select",
        "convergence_tolerance", "keep_checkpoints", "nll_samples", "nll_images",
        "fid_samples", "pr_neighbours", "iwae_ks", "likelihood", "ais_images", "bdmc_images",
        "entry", "k", "m", "beta", "latent_dim", "hidden", "prior", "objective",
        "architecture", "channels", "gaussian_scale", "kl", "components", "pseudo_inputs",
        "blocks", "binarize", "data_seed", "setup", "partition", "baseline", "test_nll",
        "colour"]
NAMES = ["", ".", "..", "a/b", "../escaped", "/absolute", "_x", ".x", "é", "a b", "x" * 70,
         "mlp-vae[k=1]", "a\nb", "nul\x00", "MLP-VAE", "mine", "mlp-vae", "iwae", "beta-vae",
         "conv-vae", "vamp-vae", "all"]
STRINGS = NAMES + ["vamp", "mog", "gaussian", "bernoulli", "none", "fixed", "dynamic",
                   "circles", "digits", "is", "ais", "elbo", "last", "iwae-paper",
                   "closed-form", "monte-carlo", "learned", "mlp", "resnet", "stl", "dreg"]
FLOATS = [0.0, -0.0, -1.0, 1e-300, 1e-6, 0.5, 1.5, 1e6, 1e300, math.inf, -math.inf, math.nan]
INTS = [-1, 0, 1, 2, 3, 5, 50, 1000, 100_001, 2**31 - 1, 2**31, 2**63 - 1, -(2**63)]

scalars = st.one_of(
    st.sampled_from(INTS), st.integers(-3, 64), st.sampled_from(FLOATS),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(STRINGS),
    st.text(max_size=8), st.booleans())
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)
not_integers = st.one_of(st.sampled_from(FLOATS), st.sampled_from(STRINGS), st.booleans(),
                         st.lists(scalars, max_size=3), st.just({}))


def value_for(key) -> st.SearchStrategy:
    """A replacement value for `key`: dataset sizes from the boundary values or another type."""
    if key in SIZE_KEYS:
        return st.one_of(st.sampled_from(SIZES), not_integers)
    return values


def nodes(tree, prefix=()) -> list[tuple]:
    """The paths of every value below the root: keys of tables, indices of lists."""
    found = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) \
        if isinstance(tree, list) else ()
    for key, value in items:
        found.append((*prefix, key))
        found += nodes(value, (*prefix, key))
    return found


def node_at(tree, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def parent_of(tree, path: tuple):
    return node_at(tree, path[:-1])


def replace_value(draw, tree: dict) -> None:
    path = draw(st.sampled_from(nodes(tree)))
    parent_of(tree, path)[path[-1]] = draw(value_for(path[-1]))


def out_of_range(draw, tree: dict) -> None:
    """A number replaced by a boundary one: 0, negative, huge, tiny, inf or nan."""
    numbers = [path for path in nodes(tree) if isinstance(node_at(tree, path), int | float)
               and not isinstance(node_at(tree, path), bool)]
    if numbers:
        path = draw(st.sampled_from(numbers))
        boundary = SIZES if path[-1] in SIZE_KEYS else INTS + FLOATS
        parent_of(tree, path)[path[-1]] = draw(st.sampled_from(boundary))


def drop(draw, tree: dict) -> None:
    path = draw(st.sampled_from(nodes(tree)))
    del parent_of(tree, path)[path[-1]]


def add_key(draw, tree: dict) -> None:
    tables = [()] + [path for path in nodes(tree) if isinstance(node_at(tree, path), dict)]
    table = node_at(tree, draw(st.sampled_from(tables)))
    key = draw(st.sampled_from(KEYS + list(SIZE_KEYS)) | st.text(max_size=6))
    table[key] = draw(value_for(key))


def nest(draw, tree: dict) -> None:
    path = draw(st.sampled_from(nodes(tree)))
    parent = parent_of(tree, path)
    value = parent[path[-1]]
    parent[path[-1]] = draw(st.sampled_from([[value], {"x": value}, [value, value]]))


def rename(draw, tree: dict) -> None:
    """A new suite name, or a model renamed (its table with it) or added with a table."""
    name = draw(st.sampled_from(NAMES) | st.text(max_size=6))
    if draw(st.booleans()) or not isinstance(tree.get("models"), list):
        tree["name"] = name
        return
    models = tree["models"]
    tables = tree.setdefault("model", {})
    if not isinstance(tables, dict):
        return
    if models and draw(st.booleans()):
        index = draw(st.integers(0, len(models) - 1))
        old, models[index] = models[index], name
        if isinstance(old, str) and old in tables:
            tables[name] = tables.pop(old)
    else:
        models.append(name)
        tables[name] = {"entry": draw(st.sampled_from(["mlp-vae", "iwae", name]))}


def sweep(draw, tree: dict) -> None:
    """A model's setting swept over a few drawn values."""
    tables = tree.get("model")
    if not (isinstance(tables, dict) and tables):
        return
    name = draw(st.sampled_from(sorted(tables, key=str)))
    if isinstance(tables[name], dict):
        key = draw(st.sampled_from(["k", "beta", "latent_dim", "hidden", "prior", "colour"]))
        tables[name][key] = draw(st.lists(scalars | st.lists(st.integers(-1, 40), max_size=3),
                                          max_size=4))


MUTATIONS = [replace_value, replace_value, out_of_range, out_of_range, drop, add_key, nest,
             rename, sweep]


def toml_key(key) -> str:
    return toml_string(str(key))


def toml_string(text: str) -> str:
    # JSON's escapes are TOML's, but for DEL, which TOML wants escaped too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_text(tree: dict) -> str:
    """`tree` as TOML: values first, then each table under its [header]."""
    lines: list[str] = []

    def emit(prefix: tuple, table: dict) -> None:
        if prefix:
            lines.append("[" + ".".join(toml_key(key) for key in prefix) + "]")
        lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()
                     if not isinstance(v, dict))
        for key, value in table.items():
            if isinstance(value, dict):
                emit((*prefix, key), value)

    emit((), tree)
    return "\n".join(lines) + "\n"


@st.composite
def suite_files(draw) -> bytes:
    tree = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 3))):
        if nodes(tree):
            draw(st.sampled_from(MUTATIONS))(draw, tree)
    data = toml_text(tree).encode()
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "insert", "invalid", "bom"]))
    at = draw(st.integers(0, len(data)))
    if damage == "truncate":
        data = data[:at]
    elif damage == "insert":
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif damage == "invalid":
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) \
            + data[at:]
    elif damage == "bom":
        data = b"\xef\xbb\xbf" + data
    return data


def listing(root: Path, leave_out: tuple[Path, ...]) -> set[Path]:
    return {path for path in root.rglob("*")
            if not any(path == out or out in path.parents for out in leave_out)}


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=suite_files())
def test_any_suite_file_is_planned_or_refused_and_nothing_is_written_outside_results(
        data, workspace, capsys):
    suite = workspace / "fuzz.toml"
    suite.write_bytes(data)
    results = workspace / "results"
    root = workspace.parent
    before = listing(root, (results, suite))
    try:
        status = main(["run", str(suite), "--dry-run", "--results-dir", str(results),
                       "--device", "cpu", "--wandb", "disabled"])
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    event(f"exit {status}")
    assert status in (0, 2), captured.err
    assert "Traceback" not in captured.err
    if status == 2:
        assert captured.err.startswith("error: ")
    assert listing(root, (results, suite)) == before
