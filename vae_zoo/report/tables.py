"""Read a suite's results directory and turn it into tables: one per dataset, over seeds.

The run directories (`runs/<run_id>/config.json` + `metrics.json` + `arrays.npz`) are the source
of truth; `summary.csv` is only read for the suite's order of datasets and models and as a
fallback for a run whose `config.json` is missing. Each dataset gets a table of quality metrics,
one of diagnostics (the NLL estimator's checks, the held-out references of the sample metrics,
epochs) and one of costs (time, memory, parameters), each written as CSV (raw mean, std, n and
95 % interval; machine-readable), Markdown and LaTeX (booktabs; formatted `mean [low, high]`,
best mean in bold). `compare_models` compares the models metric by metric (`comparisons.csv`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vae_zoo.errors import UserError
from vae_zoo.harness.store import FINISHED, read_arrays
from vae_zoo.report.statistics import (
    ALPHA,
    aggregate,
    best_models,
    holm,
    paired_image_difference,
    welch_difference,
)

RUN_COLUMNS = ["run_id", "dataset", "model", "seed", "status", "reason"]
# The training settings the findings state, from config.json's `train` (None where absent).
TRAINING_COLUMNS = {"train_epochs": "epochs", "train_patience": "patience",
                    "train_select": "select"}
SWEEP_PREFIX = "hp_"  # summary.csv columns holding a swept hyper-parameter's value


class ResultsNotFoundError(UserError, FileNotFoundError):
    """The results directory holds no run to report on."""


# --------------------------------------------------------------------------- metric descriptions


@dataclass(frozen=True)
class Metric:
    """How a metric is shown: its label, unit, which direction is better, its precision, the
    table it goes to, and the per-image values it is the mean of (when the runs keep them)."""

    label: str
    unit: str | None = None
    direction: str | None = None  # "min", "max" or None (no better direction: never marked)
    decimals: int | None = None  # None: four significant digits
    # "quality" (the metrics table, compared between models when it has a direction),
    # "diagnostic" (estimator checks, references, training), "cost", or "context" (read by the
    # report to mark or describe other cells, never a column of its own).
    group: str = "quality"
    image_array: str | None = None  # arrays.npz key of its per-image values
    image_sign: int = 1  # metric = image_sign · mean of the per-image values
    compared: bool = True  # False: a rescaled copy of another metric, compared there

    def header(self, source: str = "") -> str:
        """Column header such as `test NLL (nats) ↓`, or `test NLL, paper (nats)` for a source."""
        text = self.label + (f", {source}" if source else "")
        text += f" ({self.unit})" if self.unit else ""
        arrow = {"min": " ↓", "max": " ↑"}.get(self.direction or "", "")
        return text + ("" if source else arrow)

    def format(self, value: float) -> str:
        """One number at this metric's precision."""
        if not math.isfinite(value):
            return str(value)
        if self.decimals is None:
            return f"{value:.4g}"
        return f"{value:,.{self.decimals}f}"


# The metrics of docs/results-format.md, in the order they appear in tables.
METRICS: dict[str, Metric] = {
    "test_nll": Metric("test NLL", "nats", "min", 2, image_array="image_log_px", image_sign=-1),
    "test_bpd": Metric("test NLL", "bits/dim", "min", 3, compared=False),  # test_nll rescaled
    "test_nll_ais": Metric("test NLL, AIS", "nats", "min", 2, image_array="image_log_px_ais",
                           image_sign=-1),
    "test_elbo": Metric("test ELBO", "nats", "max", 2, image_array="image_elbo"),
    "iwae_k": Metric("IWAE bound", "nats", "max", 2),  # family: iwae_k<k>
    "test_recon": Metric("test reconstruction", "nats", "min", 2, image_array="image_recon"),
    "test_kl": Metric("test KL", "nats", None, 2, image_array="image_kl"),
    "test_mse": Metric("test MSE", None, "min", 4),
    # Not ranked: models with more latent units have more to switch on.
    "active_units": Metric("active units", None, None, 1),
    "active_units_z": Metric("active units", None, None, 1),  # family: active_units_z<layer>
    "fid": Metric("FID", None, "min", 2),
    "kid": Metric("KID", None, "min", 4),
    "precision": Metric("precision", None, "max", 3),
    "recall": Metric("recall", None, "max", 3),
    # Disentanglement (docs/metrics.md), in disentanglement_lib's order.
    "beta_vae": Metric("BetaVAE score", None, "max", 3),
    "factor_vae": Metric("FactorVAE score", None, "max", 3),
    "mig": Metric("MIG", None, "max", 3),
    "dci_disentanglement": Metric("DCI disentanglement", None, "max", 3),
    "dci_completeness": Metric("DCI completeness", None, "max", 3),
    "dci_informativeness": Metric("DCI informativeness", None, "max", 3),
    "sap": Metric("SAP", None, "max", 3),
    "modularity": Metric("modularity", None, "max", 3),
    "explicitness": Metric("explicitness", None, "max", 3),
    "probe_r2_": Metric("probe R²", None, "max", 3),  # family: probe_r2_<factor>
    "test_nll_se": Metric("NLL std. error", "nats", None, 3, "diagnostic"),
    "test_nll_k_tenth": Metric("test NLL with K/10 samples", "nats", None, 2, "diagnostic"),
    "nll_k_gap": Metric("NLL gap K/10 − K", "nats", None, 3, "diagnostic"),
    "ess_mean": Metric("ESS mean", "samples", None, 1, "diagnostic"),
    "ess_p5": Metric("ESS 5th percentile", "samples", None, 1, "diagnostic"),
    "ais_acceptance": Metric("AIS acceptance", None, None, 3, "diagnostic"),
    "bdmc_lower": Metric("BDMC lower bound", "nats", None, 2, "diagnostic"),
    "bdmc_upper": Metric("BDMC upper bound", "nats", None, 2, "diagnostic"),
    "bdmc_gap": Metric("BDMC gap", "nats", None, 3, "diagnostic"),
    "fid_ref": Metric("FID held-out vs test", None, None, 2, "diagnostic"),
    "kid_ref": Metric("KID held-out vs test", None, None, 4, "diagnostic"),
    "kid_std": Metric("KID std. over subsets", None, None, 4, "diagnostic"),
    "precision_ref": Metric("precision held-out vs test", None, None, 3, "diagnostic"),
    "recall_ref": Metric("recall held-out vs test", None, None, 3, "diagnostic"),
    "feature_net_accuracy": Metric("feature net accuracy", None, None, 3, "diagnostic"),
    "epochs_trained": Metric("epochs trained", None, None, 1, "diagnostic"),
    "best_epoch": Metric("best epoch", None, None, 1, "diagnostic"),
    "params": Metric("parameters", None, None, 0, "cost"),
    "train_seconds": Metric("train time", "s", None, 1, "cost"),
    "train_images_per_s": Metric("train speed", "images/s", None, 0, "cost"),
    "eval_seconds": Metric("eval time", "s", None, 1, "cost"),
    "peak_memory_mb": Metric("peak memory", "MB", None, 0, "cost"),
    "latent_dim": Metric("latent units", None, None, 0, "context"),  # in `active units` cells
    "fid_ref_sd": Metric("FID held-out vs test, sd over draws", None, None, 2, "context"),
    "kid_ref_sd": Metric("KID held-out vs test, sd over draws", None, None, 4, "diagnostic"),
    "precision_ref_sd": Metric("precision held-out vs test, sd over draws", None, None, 3,
                               "diagnostic"),
    "recall_ref_sd": Metric("recall held-out vs test, sd over draws", None, None, 3,
                            "diagnostic"),
    "ref_draws": Metric("reference draws", None, None, 0, "diagnostic"),
    "beta_vae_train": Metric("BetaVAE score, training votes", None, None, 3, "diagnostic"),
    "factor_vae_train": Metric("FactorVAE score, training votes", None, None, 3, "diagnostic"),
    "factor_vae_active": Metric("FactorVAE active codes", None, None, 0, "diagnostic"),
    "dci_informativeness_train": Metric("DCI informativeness, training points", None, None, 3,
                                        "diagnostic"),
    "explicitness_train": Metric("explicitness, training points", None, None, 3, "diagnostic"),
    "converged": Metric("converged", None, None, 0, "context"),  # the † mark
    "stopped_early": Metric("stopped early", None, None, 0, "context"),
    "learned": Metric("learned", None, None, 0, "context"),  # the § mark
    "initial_criterion": Metric("untrained model's selection criterion", None, None, 2,
                                "context"),
}
NLL_GAP_LIMIT = 0.1  # nats: a larger nll_k_gap says the NLL estimate still moves with K
_ORDER = {name: position for position, name in enumerate(METRICS)}
_IWAE = re.compile(r"^iwae_k(\d+)$")
_LAYER_UNITS = re.compile(r"^active_units_z(\d+)$")


def describe_metric(name: str) -> Metric:
    """The description of a metric; an unknown one is shown generically (no unit, never marked)."""
    if name in METRICS and name not in ("iwae_k", "probe_r2_", "active_units_z"):
        return METRICS[name]
    if match := _LAYER_UNITS.match(name):
        return Metric(f"active units z{match.group(1)}", None, None, 1)
    if match := _IWAE.match(name):
        return Metric(f"IWAE bound k={match.group(1)}", "nats", "max", 2,
                      image_array=f"image_{name}")
    if name.startswith("probe_r2_"):
        return Metric(f"probe R² {name.removeprefix('probe_r2_')}", None, "max", 3)
    return Metric(name)


def metric_sort_key(name: str) -> tuple:
    """Known metrics in the documented order (IWAE bounds by k), unknown ones after, by name."""
    if match := _IWAE.match(name):
        return (_ORDER["iwae_k"], int(match.group(1)), name)
    if name.startswith("probe_r2_"):
        return (_ORDER["probe_r2_"], 0, name)
    if match := _LAYER_UNITS.match(name):
        return (_ORDER["active_units_z"], int(match.group(1)), name)
    if name in _ORDER:
        return (_ORDER[name], 0, name)
    return (len(_ORDER), 0, name)


# --------------------------------------------------------------------------- loading the runs


@dataclass
class Results:
    """Every run of a suite: one row per run in `runs`, failed runs included."""

    suite: str
    results_dir: Path
    runs: pd.DataFrame  # run_id, dataset, model, seed, status, reason, then one column per metric
    metric_names: list[str]
    datasets: list[str]  # in suite order
    models: list[str]  # in suite order
    provenance: dict[str, dict] = field(default_factory=dict)  # run_id -> metrics.json provenance
    stale_runs: int = 0  # runs in the results directory left out: not in the suite's plan

    def run_dir(self, run_id: str) -> Path:
        """Where a run's files are."""
        return self.results_dir / "runs" / run_id

    def finished(self, dataset: str | None = None) -> pd.DataFrame:
        """The finished runs (of one dataset), sorted by model order then seed."""
        runs = self.runs[self.runs["status"] == FINISHED]
        if dataset is not None:
            runs = runs[runs["dataset"] == dataset]
        return runs

    def failed(self) -> pd.DataFrame:
        """Runs that did not finish, with their reasons."""
        return self.runs[self.runs["status"] != FINISHED]

    def models_of(self, dataset: str) -> list[str]:
        """The models with at least one run (finished or not) on a dataset, in suite order."""
        present = set(self.runs.loc[self.runs["dataset"] == dataset, "model"])
        return [model for model in self.models if model in present]


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    """A JSON object, or None and why it could not be read."""
    if not path.is_file():
        return None, f"no {path.name}"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return None, f"unreadable {path.name}: {error}"
    if not isinstance(data, dict):
        return None, f"unreadable {path.name}: not a JSON object"
    return data, None


def _name(section: object) -> str | None:
    """The name of `config["dataset"]` / `config["model"]` (an object; a bare string tolerated)."""
    if isinstance(section, dict):
        section = section.get("name")
    return None if section is None else str(section)


def _last_line(path: Path) -> str | None:
    """The last non-empty line of a traceback: the exception and its message."""
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else None


def seed_text(seed: object) -> str:
    """A seed as people write it; `?` when the run did not record one."""
    return "?" if pd.isna(seed) else f"{seed:g}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _first_appearance(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _setting(config: dict, *keys: str) -> object:
    """config[keys[0]][keys[1]]...; None where a level is missing or not a table."""
    for key in keys:
        if not isinstance(config, dict):
            return None
        config = config.get(key)
    return config


def _read_run(run_dir: Path, fallback: dict) -> tuple[dict, dict | None, str | None]:
    """One run as a row (run columns, then its metrics if it finished), its provenance, its suite.

    A run without a readable metrics.json, or with a status other than `finished`, is failed;
    `fallback` (its summary.csv row) names the dataset and model when config.json is missing.
    """
    config, config_problem = _read_json(run_dir / "config.json")
    record, record_problem = _read_json(run_dir / "metrics.json")
    config = config or {}
    row = {
        "run_id": run_dir.name,
        "dataset": _name(config.get("dataset")) or fallback.get("dataset") or "unknown",
        "model": _name(config.get("model")) or fallback.get("model") or "unknown",
        "seed": config.get("seed", fallback.get("seed")),
    }
    row.update({column: _setting(config, "train", key)
                for column, key in TRAINING_COLUMNS.items()})
    suite = None if config.get("suite") is None else str(config["suite"])
    if record is None:
        row.update(status="failed", reason=f"{record_problem}: the run did not finish")
        return row, None, suite

    row["status"] = str(record.get("status") or "failed")
    reason = record.get("reason")
    if row["status"] != FINISHED and not reason:
        reason = _last_line(run_dir / "error.txt") or "no reason given"
    row["reason"] = None if reason is None else str(reason).strip().splitlines()[0]
    if row["status"] == FINISHED and config_problem:
        # A finished run whose configuration is lost cannot be placed in a table row.
        row.update(status="failed", reason=f"{config_problem}: cannot tell what ran")
    elif row["status"] == FINISHED:
        values = record.get("metrics") or {}
        row.update({name: float(v) for name, v in values.items() if _is_number(v)})
        # Results from before `latent_dim` was a metric: the model's setting says it.
        latent_dim = _setting(config, "model", "hyperparameters", "latent_dim")
        if "latent_dim" not in row and _is_number(latent_dim):
            row["latent_dim"] = float(latent_dim)
    return row, record.get("provenance") or {}, suite


def load_results(results_dir: Path) -> Results:
    """Read the runs of `results_dir` (= `results/<suite>`) that its summary.csv lists — the
    cells of the suite's current plan, failed ones included; without a summary.csv, every run
    directory. Runs listed in stale.csv are counted, never read.

    Raises ResultsNotFoundError (a FileNotFoundError) when there is no run to report on.
    """
    results_dir = Path(results_dir)
    runs_dir = results_dir / "runs"
    summary = _read_summary(results_dir / "summary.csv")
    if (results_dir / "summary.csv").is_file():
        run_dirs = [runs_dir / run_id for run_id in summary]
        stale = _count_rows(results_dir / "stale.csv")
        if not run_dirs and stale:
            raise ResultsNotFoundError(
                f"no run of the suite's current plan in {runs_dir}, and {stale} stale run(s) "
                f"(see {results_dir / 'stale.csv'}: the suite or the code changed since they "
                "ran, or they ran on another device class: pass --device); run the suite "
                "(`vae-zoo run SUITE`) to make them")
    else:
        # Names starting with `.` or `_` are not runs (e.g. a run directory being written).
        run_dirs = sorted(
            p
            for p in (runs_dir.iterdir() if runs_dir.is_dir() else [])
            if p.is_dir() and not p.name.startswith((".", "_"))
        )
    if not run_dirs:
        raise ResultsNotFoundError(
            f"no runs to report on in {runs_dir}: run the suite first (`vae-zoo run SUITE`) "
            "or point --results-dir at a directory holding runs/<run_id>/metrics.json"
        )

    rows, provenance, suites = [], {}, []
    for run_dir in run_dirs:
        fallback = summary.get(run_dir.name, {})
        row, run_provenance, suite = _read_run(run_dir, fallback)
        row["variant_of"] = fallback.get("variant_of") or row["model"]
        for name, value in fallback.items():
            if name.startswith(SWEEP_PREFIX):
                row[name] = _number_or_text(value)
        rows.append(row)
        if run_provenance is not None:
            provenance[row["run_id"]] = run_provenance
        if suite is not None:
            suites.append(suite)

    runs = pd.DataFrame(rows)
    sweep_columns = [c for c in runs.columns if c.startswith(SWEEP_PREFIX)]
    described = RUN_COLUMNS + ["variant_of"] + list(TRAINING_COLUMNS) + sweep_columns
    metric_names = sorted((c for c in runs.columns if c not in described), key=metric_sort_key)
    runs = runs.reindex(columns=described + metric_names)
    runs["seed"] = pd.to_numeric(runs["seed"], errors="coerce")
    if runs["seed"].dropna().mod(1).eq(0).all():
        runs["seed"] = runs["seed"].astype("Int64")  # written as 0, 1, 2 (not 0.0), NA kept

    # Suite order: first appearance in summary.csv, then anything else by first appearance here.
    datasets = _first_appearance([r["dataset"] for r in summary.values()] + list(runs["dataset"]))
    models = _first_appearance([r["model"] for r in summary.values()] + list(runs["model"]))
    datasets = [d for d in datasets if d in set(runs["dataset"])]
    models = [m for m in models if m in set(runs["model"])]

    order = pd.DataFrame(
        {
            "dataset_rank": runs["dataset"].map({d: i for i, d in enumerate(datasets)}),
            "model_rank": runs["model"].map({m: i for i, m in enumerate(models)}),
        }
    )
    runs = (
        pd.concat([runs, order], axis=1)
        .sort_values(["dataset_rank", "model_rank", "seed", "run_id"], kind="stable")
        .drop(columns=["dataset_rank", "model_rank"])
        .reset_index(drop=True)
    )
    distinct_suites = _first_appearance(suites)
    suite = distinct_suites[0] if len(distinct_suites) == 1 else results_dir.name
    return Results(suite, results_dir, runs, metric_names, datasets, models, provenance,
                   stale_runs=_count_rows(results_dir / "stale.csv"))


def _number_or_text(value: str) -> float | str | None:
    """A summary.csv cell: a number when it reads as one, else its text (None when empty)."""
    if value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _count_rows(path: Path) -> int:
    """Rows of a CSV file; 0 when absent or unreadable."""
    try:
        return len(pd.read_csv(path, dtype=str))
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return 0


def _read_summary(path: Path) -> dict[str, dict]:
    """summary.csv as {run_id: row}, in file order; empty when absent or unreadable."""
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return {}
    if not {"run_id", "dataset", "model"} <= set(table.columns):
        return {}
    return {row["run_id"]: row for row in table.to_dict("records")}


# --------------------------------------------------------------------------- formatting


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "²": r"$^2$",
    "—": "---",
    "−": "$-$",
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "§": r"\S{}",
}


def latex_escape(text: str) -> str:
    """Text safe to put in a LaTeX table cell (also maps ± ↓ ↑ ² — − † ‡ to LaTeX)."""
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def format_cell(metric: Metric, mean: float, low: float, high: float, n: int, seeds: int) -> str:
    """`mean [low, high]` (the 95 % interval); just the mean with one value or no spread;
    `(n=…)` when some seeds lack the metric."""
    if n == 0 or not math.isfinite(mean):
        return "—"
    text = metric.format(mean)
    if math.isfinite(low) and math.isfinite(high) and low < high:
        text += f" [{metric.format(low)}, {metric.format(high)}]"
    if n < seeds:
        text += f" (n={n})"
    return text


UNCONVERGED_MARK, NLL_GAP_MARK, NOT_LEARNED_MARK = "†", "‡", "§"
CONVERGENCE_RULE = (
    "a run has converged when the best validation criterion (the one its checkpoint is "
    "selected by) over the last quarter of its epochs beats the best of the epochs before by "
    "less than `train.convergence_tolerance` of the latter (relative)")
NLL_GAP_NOTE = (
    f"{NLL_GAP_MARK} NLL estimate not converged in some run of the model: with a tenth of the "
    f"importance samples the NLL is more than {NLL_GAP_LIMIT} nats higher (`nll_k_gap`), so "
    "the estimate still moves with K.")


@dataclass
class Table:
    """One table of one dataset, in its three forms, with footnotes for its marks."""

    dataset: str
    kind: str  # "metrics", "diagnostics" or "cost"
    raw: pd.DataFrame  # what the CSV holds
    markdown: str
    latex: str
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


TABLE_GROUPS = {"metrics": "quality", "diagnostics": "diagnostic", "cost": "cost"}
TABLE_SUFFIXES = {"metrics": "", "diagnostics": "-diagnostics", "cost": "-cost"}


def _runs_of(finished: pd.DataFrame, model: str, metric: str) -> pd.Series:
    """A model's finished values of a metric (none when no run has it)."""
    if metric not in finished:
        return pd.Series(dtype=float)
    return finished.loc[finished["model"] == model, metric].dropna()


def _unconverged(finished: pd.DataFrame, model: str) -> tuple[int, int]:
    """How many of a model's runs had not converged, of those that recorded it."""
    converged = _runs_of(finished, model, "converged")
    return int((converged == 0).sum()), len(converged)


def _not_learned(finished: pd.DataFrame, model: str) -> int:
    """How many of a model's runs never beat their untrained model (`learned` = 0)."""
    return int((_runs_of(finished, model, "learned") == 0).sum())


def _not_learned_note(finished: pd.DataFrame, models: list[str]) -> str | None:
    marked = [f"`{model}` {k} of {len(_runs_of(finished, model, 'learned'))}"
              for model in models if (k := _not_learned(finished, model))]
    if not marked:
        return None
    return (f"{NOT_LEARNED_MARK} Runs that did not learn: {', '.join(marked)}; their selected "
            "weights do not beat the untrained model on the same draws (`learned` = 0): check "
            "the learning rate and the optimiser's settings before reading their numbers.")


def _convergence_note(finished: pd.DataFrame, models: list[str]) -> str | None:
    counts = {model: _unconverged(finished, model) for model in models}
    marked = [f"`{model}` {k} of {n}" for model, (k, n) in counts.items() if k]
    if not marked:
        return None
    return (f"{UNCONVERGED_MARK} Runs that had not converged: {', '.join(marked)}; "
            f"{CONVERGENCE_RULE}.")


def _metric_cells(description: Metric, metric: str, raw: pd.DataFrame,
                  finished: pd.DataFrame) -> tuple[str, list[str]]:
    """A metric's column header and cells, with what the runs add to them: `of <latent units>`
    for active units, the spread over draws of the held-out FID, the ‡ of an NLL estimate that
    had not converged."""
    header = description.header()
    cells = [format_cell(description, r[f"{metric}_mean"], r[f"{metric}_low"],
                         r[f"{metric}_high"], int(r[f"{metric}_n"]), int(r["seeds"]))
             for _, r in raw.iterrows()]
    if metric == "fid_ref" and "fid_ref_sd" in finished and finished["fid_ref_sd"].notna().any():
        # One reference per dataset, drawn several times: its spread is over draws, not seeds.
        header = f"{description.label} (± sd over draws)"
        for index, row in enumerate(raw.itertuples()):
            cells[index] = description.format(row.fid_ref_mean)
            spread = _runs_of(finished, row.model, "fid_ref_sd")
            if len(spread):
                cells[index] += f" ± {description.format(spread.mean())}"
    for index, model in enumerate(raw["model"]):
        if metric == "active_units" and len(latent := _runs_of(finished, model, "latent_dim")):
            cells[index] += f" of {latent.max():g}"
        if metric == "nll_k_gap" and (_runs_of(finished, model, metric) > NLL_GAP_LIMIT).any():
            cells[index] += f" {NLL_GAP_MARK}"
    return header, cells


def make_table(
    results: Results,
    dataset: str,
    kind: str,
    references: dict | None = None,
) -> Table | None:
    """The `metrics`, `diagnostics` or `cost` table of a dataset; None when it would have no
    metric column."""
    dataset_references = (references or {}).get(dataset, {})
    finished = results.finished(dataset)
    ours = [m for m in results.metric_names if finished[m].notna().any()]
    referenced = sorted(
        {m for values in dataset_references.values() for m in values}, key=metric_sort_key
    )
    metrics = sorted(set(ours) | set(referenced), key=metric_sort_key)
    metrics = [m for m in metrics if describe_metric(m).group == TABLE_GROUPS[kind]]
    if not metrics:
        return None
    referenced = [m for m in referenced if m in metrics]

    models = results.models_of(dataset)
    raw = aggregate(results.runs, models, dataset, metrics)
    for metric in referenced:
        paper = [dataset_references.get(model, {}).get(metric) for model in raw["model"]]
        position = raw.columns.get_loc(f"{metric}_high") + 1
        raw.insert(position, f"{metric}_paper", pd.to_numeric(pd.Series(paper), errors="coerce"))

    notes = []
    names = list(raw["model"])
    if kind != "cost" and (note := _convergence_note(finished, models)):
        notes.append(note)
        unconverged = [_unconverged(finished, model)[0] for model in names]
        raw.insert(raw.columns.get_loc("failed") + 1, "unconverged", unconverged)
        names = [f"{model} {UNCONVERGED_MARK}" if k else model
                 for model, k in zip(names, unconverged)]
    if kind != "cost" and (note := _not_learned_note(finished, models)):
        notes.append(note)
        names = [f"{name} {NOT_LEARNED_MARK}" if _not_learned(finished, model) else name
                 for name, model in zip(names, raw["model"])]
    cells: dict[str, list[str]] = {"model": names, "seeds": [str(n) for n in raw["seeds"]],
                                   "failed": [str(n) for n in raw["failed"]]}
    bold: dict[str, list[bool]] = {}
    for metric in metrics:
        description = describe_metric(metric)
        header, cells[header] = _metric_cells(description, metric, raw, finished)
        winners = best_models(raw, metric, description.direction)
        bold[header] = [model in winners for model in raw["model"]]
        if metric in referenced:
            cells[description.header("paper")] = [
                "—" if pd.isna(v) else description.format(v) for v in raw[f"{metric}_paper"]
            ]
        if metric == "nll_k_gap" and any(NLL_GAP_MARK in cell for cell in cells[header]):
            notes.append(NLL_GAP_NOTE)
    if kind == "cost":
        del cells["failed"]
    display = pd.DataFrame(cells)

    markdown_cells = pd.DataFrame({c: [t.replace("|", "\\|") for t in display[c]] for c in display})
    latex_cells = pd.DataFrame({c: [latex_escape(t) for t in display[c]] for c in display})
    for header, marks in bold.items():
        markdown_cells[header] = [
            f"**{text}**" if mark else text
            for text, mark in zip(markdown_cells[header], marks, strict=True)
        ]
        latex_cells[header] = [
            f"\\textbf{{{text}}}" if mark else text
            for text, mark in zip(latex_cells[header], marks, strict=True)
        ]
    markdown = markdown_cells.to_markdown(
        index=False,
        disable_numparse=True,
        colalign=["left"] + ["right"] * (display.shape[1] - 1),
    )
    markdown += "".join(f"\n\n{note}" for note in notes)
    latex_cells.columns = [latex_escape(c) for c in display.columns]
    latex = (
        f"% vae-zoo report: suite {results.suite}, dataset {dataset}, {kind}.\n"
        "% Mean and 95 % Student-t interval over finished seeds; best mean in bold. "
        "Needs \\usepackage{booktabs}.\n"
        + "".join(f"% {note}\n" for note in notes)
        + latex_cells.to_latex(
            index=False, escape=False, column_format="l" + "r" * (display.shape[1] - 1)
        )
    )
    return Table(dataset, kind, raw, markdown + "\n", latex, notes=notes)


def runs_table(results: Results) -> pd.DataFrame:
    """Every run, one row each, failed ones included (what `tables/runs.csv` holds)."""
    return results.runs.copy()


# --------------------------------------------------------------------------- comparisons


COMPARISON_COLUMNS = ["dataset", "metric", "A", "B", "difference", "low", "high", "p", "p_holm",
                      "n_seeds_a", "n_seeds_b", "n_images", "method", "df", "detected"]
PAIRED = "paired seeds x images"  # `paired_image_difference` on the per-image values
WELCH = "Welch over seeds"  # `welch_difference` on the per-run values


def compared_metrics(results: Results, dataset: str) -> list[str]:
    """The metrics of a dataset whose models are compared: quality metrics with a better
    direction that some finished run has (not `test_bpd`: test_nll rescaled, compared there)."""
    finished = results.finished(dataset)
    return [m for m in results.metric_names
            if finished[m].notna().any() and describe_metric(m).group == "quality"
            and describe_metric(m).direction and describe_metric(m).compared]


def model_pairs(models: list[str], baseline: str | None) -> list[tuple[str, str]]:
    """(A, B) pairs to compare, in suite order: every pair, or each model against `baseline`
    (as B); none when the baseline is not among `models`."""
    if baseline is None:
        return list(itertools.combinations(models, 2))
    if baseline not in models:
        return []
    return [(model, baseline) for model in models if model != baseline]


def _per_image_values(results: Results, finished: pd.DataFrame,
                      metrics: list[str]) -> dict[tuple[str, str], dict[int, np.ndarray]]:
    """{(model, metric): {seed: per-image values}} from the runs' arrays: the arrays that are
    there, one-dimensional and finite, of runs with a seed."""
    keys = {describe_metric(m).image_array: m for m in metrics if describe_metric(m).image_array}
    values: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    for run in finished.itertuples():
        if not keys or pd.isna(run.seed):
            continue
        arrays = read_arrays(results.run_dir(run.run_id), tuple(keys))
        for key, array in arrays.items():
            if array.ndim == 1 and np.isfinite(array).all():
                values.setdefault((run.model, keys[key]), {})[int(run.seed)] = array
    return values


def _paired(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> tuple | None:
    """Two models' (seeds, images) values on their common seeds, or None unless there are two
    common seeds whose arrays all have one length."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2 or len({len(a[s]) for s in seeds} | {len(b[s]) for s in seeds}) > 1:
        return None
    return np.stack([a[s] for s in seeds]), np.stack([b[s] for s in seeds])


def compare_models(results: Results, baseline: str | None = None) -> pd.DataFrame:
    """Every comparison of a report (COMPARISON_COLUMNS), Holm-corrected over all of them.

    Per dataset, compared metric (`compared_metrics`) and pair (`model_pairs`) where both
    models have the metric: `difference` = mean(A) - mean(B) in the metric's units with its
    95 % interval, p-value and degrees of freedom, paired over seeds and images
    (`paired_image_difference`) when both models keep the metric's per-image values on two or
    more common seeds, else Welch's test over their seeds (`welch_difference`). `p_holm` is
    `holm` over every tested row; `detected` is p_holm < 0.05.
    """
    rows = []
    for dataset in results.datasets:
        finished = results.finished(dataset)
        metrics = compared_metrics(results, dataset)
        models = [m for m in results.models_of(dataset) if (finished["model"] == m).any()]
        per_image = _per_image_values(results, finished, metrics)
        for metric in metrics:
            sign = describe_metric(metric).image_sign
            per_run = {model: values.dropna().to_numpy(dtype=np.float64)
                       for model, values in finished.groupby("model")[metric]}
            for a, b in model_pairs(models, baseline):
                values_a, values_b = per_run[a], per_run[b]
                if not len(values_a) or not len(values_b):
                    continue
                paired = _paired(per_image.get((a, metric), {}), per_image.get((b, metric), {}))
                if paired is not None:
                    estimate = paired_image_difference(sign * paired[0], sign * paired[1])
                    sizes = (len(paired[0]), len(paired[1]), paired[0].shape[1], PAIRED)
                else:
                    estimate = welch_difference(values_a, values_b)
                    sizes = (len(values_a), len(values_b), math.nan, WELCH)
                rows.append([dataset, metric, a, b, estimate.value, estimate.low, estimate.high,
                             estimate.p, math.nan, *sizes, estimate.df, False])
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    table["n_images"] = table["n_images"].astype("Int64")  # empty for Welch rows
    table["p_holm"] = holm(table["p"].to_numpy(dtype=np.float64))
    table["detected"] = table["p_holm"] < ALPHA
    return table


# --------------------------------------------------------------------------- writing


def safe_name(text: str) -> str:
    """A file-name part made of letters, digits, `.`, `_` and `-` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "unnamed"


def write_bytes(path: Path, data: bytes) -> Path:
    """Write a file atomically: a temporary file beside it, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Opened like any file (not mkstemp), so permissions follow the umask as usual.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 text atomically with `\\n` line ends."""
    return write_bytes(path, text.encode("utf-8"))


def csv_text(table: pd.DataFrame) -> str:
    """CSV with shortest round-trip floats and `\\n` line ends (byte-identical every time)."""
    return table.to_csv(index=False, lineterminator="\n")


def write_tables(
    results: Results, tables_dir: Path, references: dict | None,
    comparisons: pd.DataFrame,
) -> tuple[list[Table], list[Path]]:
    """Write each dataset's tables as CSV, Markdown and LaTeX, plus `runs.csv` and
    `comparisons.csv` (`compare_models`); return the tables and the files."""
    tables, written = [], []
    for dataset in results.datasets:
        for kind in TABLE_GROUPS:
            table = make_table(results, dataset, kind, references)
            if table is None:
                continue
            stem = safe_name(dataset) + TABLE_SUFFIXES[kind]
            table.files = [
                write_text(tables_dir / f"{stem}.csv", csv_text(table.raw)),
                write_text(tables_dir / f"{stem}.md", table.markdown),
                write_text(tables_dir / f"{stem}.tex", table.latex),
            ]
            tables.append(table)
            written += table.files
    written.append(write_text(tables_dir / "runs.csv", csv_text(runs_table(results))))
    written.append(write_text(tables_dir / "comparisons.csv", csv_text(comparisons)))
    return tables, written
