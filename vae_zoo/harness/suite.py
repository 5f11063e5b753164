"""Suites: TOML files naming datasets × models × seeds with their settings, validated into cells.

A suite file is refused before anything runs when it names an unknown dataset, model or key, or
gives a value of the wrong type; the message names the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vae_zoo.data import BINARIZE_MODES, DATASETS, dataset_options
from vae_zoo.errors import UserError
from vae_zoo.evaluate import EvalConfig
from vae_zoo.harness.executors import SlurmOptions
from vae_zoo.harness.sweeps import entry_of, expand_sweeps
from vae_zoo.train import LR_SCHEDULES, TrainConfig
from vae_zoo.zoo import (
    ZOO,
    check_data_fit,
    is_int,
    is_number,
    list_valued_settings,
    resolve_hyperparameters,
)

REPO_SUITES = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"
TOP_LEVEL_KEYS = ("name", "description", "project", "datasets", "models", "seeds", "train",
                  "eval", "dataset", "model", "reference", "report", "slurm")
REPORT_KEYS = ("baseline",)


def suite_dirs() -> list[Path]:
    """Where suite names are looked up: ./benchmarks/suites, then the repository's."""
    local = Path.cwd() / "benchmarks" / "suites"
    return [local] if local.resolve() == REPO_SUITES else [local, REPO_SUITES]


def available_suites() -> list[str]:
    names = {path.stem for folder in suite_dirs() if folder.is_dir()
             for path in folder.glob("*.toml")}
    return sorted(names)


def find_suite_file(name_or_path: str) -> Path:
    """A suite by path, or by name in `suite_dirs()`."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise UserError(f"suite file '{path}' does not exist")
        return path
    for folder in suite_dirs():
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    raise UserError(
        f"unknown suite '{name_or_path}'; available suites: {', '.join(available_suites())} "
        f"(or give the path of a .toml file)"
    )


@dataclass(frozen=True)
class ModelSpec:
    name: str  # as named in the suite (a variant such as "iwae-k50", a sweep's "iwae[k=50]")
    entry: str  # the zoo entry it is built from
    hyperparameters: dict
    variant_of: str = ""  # the [model.NAME] it was swept from; "" means `name` (not swept)
    sweep: dict = field(default_factory=dict)  # swept key -> its value here, as in hyperparameters

    def __post_init__(self):
        if not self.variant_of:
            object.__setattr__(self, "variant_of", self.name)


@dataclass(frozen=True)
class Cell:
    """One (dataset, model, seed) of a suite, fully resolved."""

    suite: str
    dataset: str
    dataset_options: dict
    model: ModelSpec
    seed: int
    train: TrainConfig
    eval: EvalConfig

    def config(self, data_fingerprint: str) -> dict:
        """The resolved configuration as written to config.json (the planner adds the ids)."""
        return {
            "suite": self.suite,
            "dataset": {"name": self.dataset, "options": self.dataset_options,
                        "fingerprint": data_fingerprint},
            "model": {"name": self.model.name, "entry": self.model.entry,
                      "variant_of": getattr(self.model, "variant_of", self.model.name),
                      "sweep": getattr(self.model, "sweep", {}),
                      "hyperparameters": self.model.hyperparameters},
            "seed": self.seed,
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
        }


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    description: str
    project: str
    datasets: dict[str, dict]  # name -> resolved options
    models: list[ModelSpec]
    seeds: list[int]
    train: TrainConfig
    eval: EvalConfig
    references: dict = field(default_factory=dict)  # dataset -> model -> metric -> value
    # [report] baseline: the model every other is compared with; None: every pair of models.
    baseline: str | None = None
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    def cells(self) -> list[Cell]:
        return [Cell(self.name, dataset, options, model, seed, self.train, self.eval)
                for dataset, options in self.datasets.items()
                for model in self.models
                for seed in self.seeds]


def load_suite(name_or_path: str) -> Suite:
    """Read and validate a suite; raises `UserError` naming the first problem."""
    path = find_suite_file(name_or_path)
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML: {error}") from None
    try:
        return parse_suite(table, path)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def parse_suite(table: dict, path: Path) -> Suite:
    check_keys(table, TOP_LEVEL_KEYS, "suite")
    for key in ("datasets", "models", "seeds"):
        if key not in table:
            raise UserError(f"missing key '{key}'")
    datasets = string_list(table, "datasets")
    # "all": every zoo entry, in the registry's order, so a suite that means the whole zoo grows
    # with it.
    model_names = list(ZOO) if table["models"] == "all" else string_list(table, "models")
    seeds = table["seeds"]
    if not (isinstance(seeds, list) and seeds and all(is_int(s) and s >= 0 for s in seeds)):
        raise UserError(f"'seeds' = {seeds!r}; expected a list of non-negative integers")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"'seeds' = {seeds!r} repeats a seed")

    dataset_tables = sub_tables(table, "dataset")
    for name in list(datasets) + list(dataset_tables):
        if name not in DATASETS:
            raise UserError(f"unknown dataset '{name}'; valid datasets: {', '.join(DATASETS)}")
    resolved_datasets = {name: parse_dataset_options(name, dataset_tables.get(name, {}))
                         for name in datasets}

    model_tables = sub_tables(table, "model")
    models = [variant for name in model_names
              for variant in parse_model(name, model_tables.get(name, {}))]
    for name in model_tables:
        if name not in model_names:
            raise UserError(f"[model.{name}] configures a model that is not in 'models'")
    names = [model.name for model in models]
    for model in models:
        if model.sweep and (model.name in model_names or names.count(model.name) > 1):
            raise UserError(f"[model.{model.variant_of}] sweeps into '{model.name}', which is "
                            "also the name of another model in 'models'; rename one of them")

    for dataset, options in resolved_datasets.items():
        for model in models:
            problem = check_data_fit(model.hyperparameters, options["binarize"])
            if problem:
                raise UserError(f"model '{model.name}' on dataset '{dataset}' (binarize = "
                                f"\"{options['binarize']}\"): {problem}")

    return Suite(
        name=str(table.get("name", path.stem)),
        path=path,
        description=str(table.get("description", "")),
        project=str(table.get("project", "vae-zoo")),
        datasets=resolved_datasets,
        models=models,
        seeds=list(seeds),
        train=parse_train(table.get("train", {})),
        eval=parse_eval(table.get("eval", {})),
        references=parse_references(table.get("reference", {}), datasets, names),
        baseline=parse_baseline(table.get("report", {}), names),
        slurm=parse_dataclass(SlurmOptions, table.get("slurm", {}), "slurm"),
    )


def check_keys(table: dict, valid, where: str) -> None:
    for key in table:
        if key not in valid:
            raise UserError(f"unknown key '{key}' in {where}; valid keys: {', '.join(valid)}")


def string_list(table: dict, key: str) -> list[str]:
    value = table[key]
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        expected = "a non-empty list of names" + (' or "all"' if key == "models" else "")
        raise UserError(f"'{key}' = {value!r}; expected {expected}")
    if len(set(value)) != len(value):
        raise UserError(f"'{key}' = {value!r} repeats a name")
    return value


def sub_tables(table: dict, key: str) -> dict[str, dict]:
    value = table.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise UserError(f"'{key}' must be a table of tables, e.g. [{key}.NAME]")
    return value


def parse_dataset_options(name: str, overrides: dict) -> dict:
    defaults = dataset_options(name)
    where = f"[dataset.{name}]"
    check_keys(overrides, list(defaults), where)
    for key, value in overrides.items():
        default = defaults[key]
        if key == "binarize":
            if value not in BINARIZE_MODES:
                raise UserError(f"{where} binarize = {value!r}; valid choices: "
                                f"{', '.join(BINARIZE_MODES)}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"{where} {key} = {value!r}; expected true or false")
        elif isinstance(default, int) and not (is_int(value) and value >= 0):
            raise UserError(f"{where} {key} = {value!r}; expected a non-negative integer")
    return dataset_options(name, overrides)


def parse_model(name: str, table: dict) -> list[ModelSpec]:
    """The models of `[model.NAME]`: one, or one variant per combination of swept values."""
    entry = entry_of(name, table)
    if entry not in ZOO:
        hint = ("" if name != entry else
                f" (a variant needs [model.{name}] with entry = one of the zoo's models)")
        raise UserError(f"unknown model '{entry}'{hint}; valid models: {', '.join(ZOO)}")
    list_valued = list_valued_settings(entry, table)
    models = []
    for variant, overrides, swept in expand_sweeps(name, table, list_valued):
        overrides.pop("entry", None)
        try:
            hyperparameters = resolve_hyperparameters(entry, overrides)
        except UserError as error:
            where = f" (in the variant '{variant}')" if swept else ""
            raise UserError(f"[model.{name}] {error}{where}") from None
        models.append(ModelSpec(variant, entry, hyperparameters, variant_of=name,
                                sweep={key: hyperparameters[key] for key in swept}))
    return models


def parse_dataclass(cls, table: dict, where: str):
    """Build the frozen dataclass `cls` from a TOML table, checking keys and value types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(table, dict):
        raise UserError(f"'{where}' must be a table, e.g. [{where}]")
    check_keys(table, list(fields), f"[{where}]")
    values = {}
    for key, value in table.items():
        default = fields[key].default
        if key == "setup":
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            expected = "a list of shell lines"
            value = tuple(value) if ok else value
        elif default is None:
            ok, expected = isinstance(value, str), "a string"
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
            expected = "true or false"
        elif isinstance(default, int):
            ok = is_int(value) and (value > 0 or (value == 0 and default == 0))
            expected = "a positive integer" if default else "a non-negative integer"
        elif isinstance(default, float):
            ok, expected = is_number(value) and value > 0, "a positive number"
        elif isinstance(default, str):
            choices = LR_SCHEDULES if key == "lr_schedule" else fields[key].metadata.get("choices")
            ok = isinstance(value, str) and (choices is None or value in choices)
            expected = f"one of {', '.join(choices)}" if choices else "a string"
        elif fields[key].metadata.get("choices") and isinstance(default, tuple):
            choices = fields[key].metadata["choices"]  # a non-empty list of distinct choices
            ok = (isinstance(value, list) and value and len(set(value)) == len(value)
                  and all(v in choices for v in value))
            expected = f"a list of distinct values among {', '.join(choices)}"
            value = tuple(value) if ok else value
        elif isinstance(default, tuple) or fields[key].default_factory is not dataclasses.MISSING:
            ok = isinstance(value, list) and all(is_int(v) and v > 0 for v in value)
            expected = "a list of positive integers"
            value = tuple(value) if ok else value
        else:
            ok, expected = True, ""
        if not ok:
            raise UserError(f"[{where}] {key} = {value!r}; expected {expected}")
        values[key] = float(value) if isinstance(default, float) else value
    return cls(**values)


def parse_train(table: dict) -> TrainConfig:
    """[train], where `max_epochs` names the budget of early stopping: with `patience`, instead
    of `epochs`."""
    if isinstance(table, dict) and "max_epochs" in table:
        if "epochs" in table:
            raise UserError("[train] sets both 'epochs' and 'max_epochs'; use 'epochs' for a "
                            "fixed budget, or 'patience' with 'max_epochs' for early stopping")
        if not table.get("patience"):
            raise UserError("[train] max_epochs is the budget of early stopping; set "
                            "'patience' (epochs without improvement before stopping) too, or "
                            "use 'epochs' for a fixed budget")
        table = {("epochs" if key == "max_epochs" else key): value for key, value in table.items()}
    return parse_dataclass(TrainConfig, table, "train")


def parse_eval(table: dict) -> EvalConfig:
    """[eval]; importance sampling is always one of the likelihood estimators."""
    config = parse_dataclass(EvalConfig, table, "eval")
    if "is" not in config.likelihood:
        raise UserError(f"[eval] likelihood = {list(config.likelihood)} leaves out \"is\": "
                        "importance sampling gives test_nll; AIS is a check beside it, e.g. "
                        'likelihood = ["is", "ais"]')
    return config


def parse_baseline(table: dict, models: list[str]) -> str | None:
    """[report] baseline = "<model>": compare every model with it rather than every pair."""
    if not isinstance(table, dict):
        raise UserError("'report' must be a table, e.g. [report]")
    check_keys(table, REPORT_KEYS, "[report]")
    baseline = table.get("baseline")
    if baseline is not None and baseline not in models:
        raise UserError(f"[report] baseline = {baseline!r} is not one of the suite's models: "
                        f"{', '.join(models)}")
    return baseline


def parse_references(table: dict, datasets: list[str], models: list[str]) -> dict:
    """[reference.<dataset>.<model>] metric = value: published numbers shown beside ours."""
    for dataset, by_model in table.items():
        if not isinstance(by_model, dict):
            raise UserError("[reference] expects tables [reference.DATASET.MODEL]")
        for model, values in by_model.items():
            if model not in models:
                raise UserError(f"[reference.{dataset}.{model}] names a model not in 'models'")
            for metric, value in values.items():
                if not is_number(value):
                    raise UserError(f"[reference.{dataset}.{model}] {metric} = {value!r}; "
                                    "expected a number")
    return table
