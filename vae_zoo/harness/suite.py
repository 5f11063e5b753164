"""Suites: TOML files naming datasets × models × seeds with their settings, validated into cells.

Every input is checked before anything runs: no folder is created and no data is loaded for a
suite that is refused. A suite file is refused, with a message that names the key and what it
accepts, when it
- is not a readable UTF-8 TOML file of at most 1 MiB;
- names an unknown dataset, model, key or choice, or gives a value of the wrong type, a number
  out of its range (every number finite: TOML has `inf` and `nan`), or a list or table where a
  value is expected (or the reverse);
- gives a suite, model, project or reference metric a name outside the safe character set
  (`SUITE_NAME`, `MODEL_NAME`, `METRIC_NAME`): names become folder names;
- asks a dataset for more images than it has, or for a split without images (`check_options`);
- asks for evaluation settings the data's sizes cannot serve (`check_eval_fits_data`);
- has a model that cannot be built or run on the dataset's images, or whose parameters alone
  (with gradients and Adam's moments) exceed the machine's memory (`zoo.check_size`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vae_zoo.data import (
    BINARIZE_MODES,
    DATASETS,
    check_options,
    dataset_options,
    image_shape,
    split_sizes,
)
from vae_zoo.errors import UserError
from vae_zoo.evaluate import EvalConfig
from vae_zoo.harness.executors import SlurmOptions
from vae_zoo.harness.sweeps import entry_of, expand_sweeps, slug
from vae_zoo.settings import (
    MAX_LIST_LENGTH,
    describe_range,
    in_range,
    machine_memory,
    non_finite,
    shown,
)
from vae_zoo.train import LR_SCHEDULES, TrainConfig
from vae_zoo.zoo import (
    ZOO,
    check_data_fit,
    check_size,
    is_number,
    list_valued_settings,
    resolve_hyperparameters,
)

REPO_SUITES = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"
TOP_LEVEL_KEYS = ("name", "description", "project", "datasets", "models", "seeds", "train",
                  "eval", "dataset", "model", "reference", "report", "slurm")
REPORT_KEYS = ("baseline",)
MAX_SUITE_BYTES = 2**20  # a suite is a short text file
MAX_SEED = 2**31 - 1  # seeds and data_seed

# Names become folder names: results/<suite>/ and run directories `<dataset>-<slug of the
# model name>-s<seed>-<id>`. ASCII letters and digits, '.' and '-' (and '_' in a suite's name),
# starting with a letter or digit: never empty, ".", "..", hidden (".") or the store's own
# ("_cache"), and no path separator. Model names leave out '_' because `sweeps.slug` writes a
# sweep's `[` as `_`: without it, every name has its own run directory name.
NAME_LENGTH = 64
SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
SUITE_NAME_RULE = ("ASCII letters, digits, '.', '-' and '_', starting with a letter or digit, "
                   f"at most {NAME_LENGTH} characters")
MODEL_NAME_RULE = ("ASCII letters, digits, '.' and '-', starting with a letter or digit, at "
                   f"most {NAME_LENGTH} characters")
METRIC_NAME_RULE = ("ASCII letters, digits and '_', starting with a letter, at most "
                    f"{NAME_LENGTH} characters")
# A swept model's name grows with its swept values; this bound keeps its run directory's name
# within the 255 bytes file systems allow.
MAX_RUN_NAME = 200

# Linear probes of the true factors hold out a fifth of the test images and need at least two
# images on each side (`metrics.factors.linear_probe_r2`).
MIN_FACTOR_TEST_IMAGES = 8


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
    folder_error = UserError(f"'{path}' is a folder; give a suite name or the path of a "
                             ".toml file")
    try:
        if path.suffix == ".toml" or path.is_file():
            if path.is_dir():
                raise folder_error
            if not path.is_file():
                raise UserError(f"suite file '{path}' does not exist")
            return path
        for folder in suite_dirs():
            candidate = folder / f"{name_or_path}.toml"
            if candidate.is_file():
                return candidate
        if path.is_dir():
            raise folder_error
    except (OSError, ValueError) as error:  # e.g. a name too long, or with a NUL byte
        raise UserError(f"suite {shown(name_or_path)} cannot be looked up: {error}") from None
    raise UserError(
        f"unknown suite {shown(name_or_path)}; available suites: "
        f"{', '.join(available_suites())} "
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
        table = tomllib.loads(read_suite_text(path))
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML: {error}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid TOML: its arrays or tables are nested too "
                        "deeply") from None
    try:
        return parse_suite(table, path)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    except RecursionError:  # a value nested deeper than any setting takes
        raise UserError(f"{path}: a value is nested too deeply (lists of lists of ...); no "
                        "setting takes more than a list of lists") from None


def read_suite_text(path: Path) -> str:
    """The text of a suite file: UTF-8, at most `MAX_SUITE_BYTES`."""
    try:
        size = path.stat().st_size
        if size > MAX_SUITE_BYTES:
            raise UserError(f"{path}: {size:,} bytes is too large for a suite file (at most "
                            f"{MAX_SUITE_BYTES:,}); is it the right file?")
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot be read: {error.strerror or error}; check that it is "
                        "a readable file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserError(f"{path}: not UTF-8 text (byte {data[error.start]:#04x} on line "
                        f"{line}); TOML files are UTF-8: save it as UTF-8") from None


def parse_suite(table: dict, path: Path) -> Suite:
    check_keys(table, TOP_LEVEL_KEYS, "suite")
    for key in ("datasets", "models", "seeds"):
        if key not in table:
            raise UserError(f"missing key '{key}'")
    name = parse_suite_name(table, path)
    description = table.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"'description' = {shown(description)}; expected a string")
    project = table.get("project", "vae-zoo")
    check_name("project =", project, SUITE_NAME, SUITE_NAME_RULE, " (it names the W&B project)")
    datasets = string_list(table, "datasets")
    # "all": every zoo entry, in the registry's order, so a suite that means the whole zoo grows
    # with it.
    model_names = list(ZOO) if table["models"] == "all" else string_list(table, "models")
    seeds = table["seeds"]
    if not (isinstance(seeds, list) and seeds and all(in_range(s, int, 0, MAX_SEED)
                                                      for s in seeds)):
        raise UserError(f"'seeds' = {shown(seeds)}; expected a non-empty list of integers from "
                        f"0 to {MAX_SEED}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"'seeds' = {shown(seeds)} repeats a seed")

    dataset_tables = sub_tables(table, "dataset")
    for dataset in list(datasets) + list(dataset_tables):
        if dataset not in DATASETS:
            raise UserError(f"unknown dataset {shown(dataset)}; valid datasets: "
                            f"{', '.join(DATASETS)}")
    for dataset in dataset_tables:
        if dataset not in datasets:
            raise UserError(f"[dataset.{dataset}] configures a dataset that is not in "
                            f"'datasets' ({', '.join(datasets)})")
    resolved_datasets = {dataset: parse_dataset_options(dataset, dataset_tables.get(dataset, {}))
                         for dataset in datasets}

    models = parse_models(model_names, sub_tables(table, "model"))
    names = [model.name for model in models]
    train = parse_train(table.get("train", {}))
    evaluation = parse_eval(table.get("eval", {}))

    memory = machine_memory()
    for dataset, options in resolved_datasets.items():
        check_eval_fits_data(evaluation, dataset, options)
        shape = image_shape(dataset, options)
        for model in models:
            problem = check_data_fit(model.hyperparameters, options["binarize"])
            if problem:
                raise UserError(f"model '{model.name}' on dataset '{dataset}' (binarize = "
                                f"\"{options['binarize']}\"): {problem}")
            problem = check_size(model.entry, shape, model.hyperparameters, memory)
            if problem:
                raise UserError(f"model '{model.name}' on dataset '{dataset}' {problem}")

    return Suite(
        name=name,
        path=path,
        description=description,
        project=project,
        datasets=resolved_datasets,
        models=models,
        seeds=list(seeds),
        train=train,
        eval=evaluation,
        references=parse_references(table.get("reference", {}), datasets, names),
        baseline=parse_baseline(table.get("report", {}), names),
        slurm=parse_dataclass(SlurmOptions, table.get("slurm", {}), "slurm"),
    )


def check_name(what: str, name, pattern: re.Pattern, rule: str, hint: str = "") -> str:
    """`name` when it is a string of at most `NAME_LENGTH` characters that `pattern` matches
    whole; else `UserError` showing it and the `rule`."""
    if not (isinstance(name, str) and len(name) <= NAME_LENGTH and pattern.fullmatch(name)):
        raise UserError(f"{what} {shown(name)} is not allowed: names use only {rule}{hint}")
    return name


def parse_suite_name(table: dict, path: Path) -> str:
    """`name`, else the file's name without .toml: it names the suite's results folder."""
    if "name" in table:
        return check_name("name =", table["name"], SUITE_NAME, SUITE_NAME_RULE,
                          " (it names the suite's results folder)")
    return check_name("the suite's name (its file name)", path.stem, SUITE_NAME,
                      SUITE_NAME_RULE, "; rename the file or set name = \"...\" in it")


def check_model_name(name: str) -> str:
    return check_name("model name", name, MODEL_NAME, MODEL_NAME_RULE)


def check_keys(table: dict, valid, where: str) -> None:
    for key in table:
        if key not in valid:
            raise UserError(f"unknown key {shown(key)} in {where}; valid keys: "
                            f"{', '.join(valid)}")


def string_list(table: dict, key: str) -> list[str]:
    value = table[key]
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        expected = "a non-empty list of names" + (' or "all"' if key == "models" else "")
        raise UserError(f"'{key}' = {shown(value)}; expected {expected}")
    if len(set(value)) != len(value):
        raise UserError(f"'{key}' = {shown(value)} repeats a name")
    return value


def sub_tables(table: dict, key: str) -> dict[str, dict]:
    value = table.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise UserError(f"'{key}' must be a table of tables, e.g. [{key}.NAME]")
    return value


def parse_dataset_options(name: str, overrides: dict) -> dict:
    """The options of dataset `name` with `overrides`, each checked for its type and range, and
    together against what the dataset can serve (`data.check_options`)."""
    defaults = dataset_options(name)
    where = f"[dataset.{name}]"
    check_keys(overrides, list(defaults), where)
    for key, value in overrides.items():
        default = defaults[key]
        if key == "binarize":
            if not isinstance(value, str) or value not in BINARIZE_MODES:
                raise UserError(f"{where} binarize = {shown(value)}; valid choices: "
                                f"{', '.join(BINARIZE_MODES)}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"{where} {key} = {shown(value)}; expected true or false")
        elif isinstance(default, int) and not in_range(value, int, 0, MAX_SEED):
            raise UserError(f"{where} {key} = {shown(value)}; expected an integer from 0 to "
                            f"{MAX_SEED}")
    options = dataset_options(name, overrides)
    problem = check_options(name, options)
    if problem:
        raise UserError(f"{where} {problem}")
    return options


def parse_models(model_names: list[str], model_tables: dict[str, dict]) -> list[ModelSpec]:
    """Every model of `model_names` (with its `[model.NAME]` table), swept into its variants;
    each name safe (`MODEL_NAME`) and each variant's run directory name its own."""
    models = []
    for name in model_names:
        try:
            models += parse_model(name, model_tables.get(name, {}))
        except UserError:
            check_model_name(name)  # an unsafe name is the first thing to fix
            raise
    for name in model_tables:
        if name not in model_names:
            check_model_name(name)
            raise UserError(f"[model.{name}] configures a model that is not in 'models'")
    names = [model.name for model in models]
    for model in models:
        if model.sweep and (model.name in model_names or names.count(model.name) > 1):
            raise UserError(f"[model.{model.variant_of}] sweeps into '{model.name}', which is "
                            "also the name of another model in 'models'; rename one of them")
    for name in model_names:
        check_model_name(name)
    run_names: dict[str, str] = {}
    for model in models:
        run_name = slug(model.name)
        if len(run_name) > MAX_RUN_NAME:
            raise UserError(f"[model.{model.variant_of}] sweeps into a name of {len(run_name)} "
                            f"characters ({shown(model.name)}); at most {MAX_RUN_NAME}: sweep "
                            "fewer keys or shorter values")
        # Case-insensitive file systems (macOS, Windows) would merge names differing in case.
        other = run_names.setdefault(run_name.lower(), model.name)
        if other != model.name:
            raise UserError(f"models '{other}' and '{model.name}' would share run directories "
                            "(names that differ only in case are one folder on some file "
                            "systems); rename one of them")
    return models


def parse_model(name: str, table: dict) -> list[ModelSpec]:
    """The models of `[model.NAME]`: one, or one variant per combination of swept values."""
    entry = entry_of(name, table)
    if entry not in ZOO:
        hint = ("" if name != entry else
                f" (a variant needs [model.{name}] with entry = one of the zoo's models)")
        raise UserError(f"unknown model {shown(entry)}{hint}; valid models: {', '.join(ZOO)}")
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


def parse_dataclass(cls, table: dict, where: str, aliases: dict | None = None):
    """Build the frozen dataclass `cls` from a TOML table, checking keys, value types and
    ranges: a field's `minimum` and `maximum` from its metadata.
    `aliases` maps a field to the key the suite wrote for it (in messages)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(table, dict):
        raise UserError(f"'{where}' must be a table, e.g. [{where}]")
    check_keys(table, list(fields), f"[{where}]")
    values = {}
    for key, value in table.items():
        default = fields[key].default
        rule = fields[key].metadata
        choices = LR_SCHEDULES if key == "lr_schedule" else rule.get("choices")
        if key == "setup":
            ok = (isinstance(value, list) and len(value) <= 100
                  and all(isinstance(v, str) and one_line(v) for v in value))
            expected = "a list of at most 100 shell lines (strings without line breaks)"
            value = tuple(value) if ok else value
        elif default is None:
            ok = isinstance(value, str) and 0 < len(value) <= 256 and one_line(value)
            expected = "a non-empty string of at most 256 characters on one line"
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
            expected = "true or false"
        elif isinstance(default, int | float):
            numeric = type(default)
            bounds = {"minimum": rule.get("minimum", 0 if default == 0 else None),
                      "maximum": rule.get("maximum"),
                      "positive": default != 0 and "minimum" not in rule}
            ok = in_range(value, numeric, **bounds)
            expected = describe_range(numeric, **bounds) + non_finite(value)
        elif isinstance(default, str):
            ok = isinstance(value, str) and (choices is None or value in choices)
            expected = f"one of {', '.join(choices)}" if choices else "a string"
        elif choices and isinstance(default, tuple):
            # a non-empty list of distinct choices
            ok = (isinstance(value, list) and value
                  and all(isinstance(v, str) and v in choices for v in value)
                  and len(set(value)) == len(value))
            expected = f"a list of distinct values among {', '.join(choices)}"
            value = tuple(value) if ok else value
        elif isinstance(default, tuple) or fields[key].default_factory is not dataclasses.MISSING:
            bounds = {"maximum": rule.get("maximum"), "positive": True}
            ok = (isinstance(value, list) and len(value) <= MAX_LIST_LENGTH
                  and all(in_range(v, int, **bounds) for v in value)
                  and len(set(value)) == len(value))
            expected = (f"a list of distinct {describe_range(int, **bounds, plural=True)} "
                        f"(at most {MAX_LIST_LENGTH})")
            value = tuple(value) if ok else value
        else:
            ok, expected = True, ""
        if not ok:
            shown_key = (aliases or {}).get(key, key)
            raise UserError(f"[{where}] {shown_key} = {shown(value)}; expected {expected}")
        values[key] = float(value) if isinstance(default, float) else value
    return cls(**values)


def one_line(text: str) -> bool:
    """Whether `text` has no line break or other control character (tabs aside)."""
    return not any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in text)


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
        return parse_dataclass(TrainConfig, table, "train", {"epochs": "max_epochs"})
    return parse_dataclass(TrainConfig, table, "train")


def parse_eval(table: dict) -> EvalConfig:
    """[eval]; importance sampling is always one of the likelihood estimators, and precision
    and recall need more samples than neighbours."""
    config = parse_dataclass(EvalConfig, table, "eval")
    if "is" not in config.likelihood:
        raise UserError(f"[eval] likelihood = {list(config.likelihood)} leaves out \"is\": "
                        "importance sampling gives test_nll; AIS is a check beside it, e.g. "
                        'likelihood = ["is", "ais"]')
    if config.fid_samples <= config.pr_neighbours:
        raise UserError(f"[eval] fid_samples = {config.fid_samples} with pr_neighbours = "
                        f"{config.pr_neighbours}: precision and recall find each sample's "
                        f"{config.pr_neighbours} nearest neighbours among the others; set "
                        f"fid_samples to at least {config.pr_neighbours + 1}, or lower "
                        "pr_neighbours")
    return config


def check_eval_fits_data(config: EvalConfig, dataset: str, options: dict) -> None:
    """Refuse evaluation settings that the dataset's split sizes cannot serve: the sample
    metrics use min(fid_samples, test images, held-out images / 2) images and need more than
    `pr_neighbours`; probes of true factors need `MIN_FACTOR_TEST_IMAGES` test images."""
    train, val, test = split_sizes(dataset, options)
    where = f"[dataset.{dataset}]"
    needed = config.pr_neighbours + 1
    fix = f"or lower [eval] pr_neighbours (now {config.pr_neighbours})"
    if test < needed:
        raise UserError(f"{where} leaves {test} test images; precision and recall need more "
                        f"test images than pr_neighbours: give at least {needed} ({fix})")
    if (train + val) // 2 < needed:
        raise UserError(f"{where} leaves {train + val} training and validation images; the "
                        f"held-out reference of the sample metrics needs twice pr_neighbours + "
                        f"1 of them: give at least {2 * needed} ({fix})")
    if DATASETS[dataset].has_factors and test < MIN_FACTOR_TEST_IMAGES:
        raise UserError(f"{where} leaves {test} test images; the linear probes of its true "
                        f"factors need at least {MIN_FACTOR_TEST_IMAGES}")


def parse_baseline(table: dict, models: list[str]) -> str | None:
    """[report] baseline = "<model>": compare every model with it rather than every pair."""
    if not isinstance(table, dict):
        raise UserError("'report' must be a table, e.g. [report]")
    check_keys(table, REPORT_KEYS, "[report]")
    baseline = table.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or baseline not in models):
        raise UserError(f"[report] baseline = {shown(baseline)} is not one of the suite's "
                        f"models: {', '.join(models)}")
    return baseline


def parse_references(table: dict, datasets: list[str], models: list[str]) -> dict:
    """[reference.<dataset>.<model>] metric = value: published numbers shown beside ours."""
    expected = "tables [reference.DATASET.MODEL] of metric = number"
    if not isinstance(table, dict):
        raise UserError(f"'reference' = {shown(table)}; expected {expected}")
    for dataset, by_model in table.items():
        if dataset not in datasets:
            raise UserError(f"[reference] dataset {shown(dataset)} is not one of the suite's "
                            f"datasets: {', '.join(datasets)}")
        if not isinstance(by_model, dict):
            raise UserError(f"[reference] {dataset} = {shown(by_model)}; expected {expected}")
        for model, values in by_model.items():
            if model not in models:
                raise UserError(f"[reference.{dataset}] model {shown(model)} is not one of the "
                                f"suite's models: {', '.join(models)}")
            if not isinstance(values, dict):
                raise UserError(f"[reference.{dataset}] {model} = {shown(values)}; expected "
                                f"{expected}")
            for metric, value in values.items():
                check_name(f"[reference.{dataset}.{model}] metric", metric, METRIC_NAME,
                           METRIC_NAME_RULE)
                if not (is_number(value) and math.isfinite(value)):
                    raise UserError(f"[reference.{dataset}.{model}] {metric} = {shown(value)}; "
                                    f"expected a finite number")
    return table
