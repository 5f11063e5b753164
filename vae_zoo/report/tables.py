"""Read a suite's results directory and turn it into tables: one per dataset, over seeds.

The run directories (`runs/<run_id>/config.json` + `metrics.json`) are the source of truth;
`summary.csv` is only read for the suite's order of datasets and models and as a fallback for a
run whose `config.json` is missing. Each dataset gets a table of quality metrics and a table of
costs (time, memory, parameters), each written as CSV (raw mean/std/n, machine-readable),
Markdown and LaTeX (booktabs; formatted `mean ± std`, best value in bold).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vae_zoo.errors import UserError
from vae_zoo.harness.store import FINISHED
from vae_zoo.report.statistics import aggregate, best_models

RUN_COLUMNS = ["run_id", "dataset", "model", "seed", "status", "reason"]
SWEEP_PREFIX = "hp_"  # summary.csv columns holding a swept hyper-parameter's value


class ResultsNotFoundError(UserError, FileNotFoundError):
    """The results directory holds no run to report on."""


# --------------------------------------------------------------------------- metric descriptions


@dataclass(frozen=True)
class Metric:
    """How a metric is shown: its label, unit, which direction is better, and its precision."""

    label: str
    unit: str | None = None
    direction: str | None = None  # "min", "max" or None (no better direction: never marked)
    decimals: int | None = None  # None: four significant digits
    group: str = "quality"  # "quality" or "cost" (which table the metric goes to)

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
    "test_nll": Metric("test NLL", "nats", "min", 2),
    "test_bpd": Metric("test NLL", "bits/dim", "min", 3),
    "test_elbo": Metric("test ELBO", "nats", "max", 2),
    "iwae_k": Metric("IWAE bound", "nats", "max", 2),  # family: iwae_k<k>
    "test_recon": Metric("test reconstruction", "nats", "min", 2),
    "test_kl": Metric("test KL", "nats", None, 2),
    "test_mse": Metric("test MSE", None, "min", 4),
    "active_units": Metric("active units", None, "max", 1),
    "active_units_z": Metric("active units", None, None, 1),  # family: active_units_z<layer>
    "fid": Metric("FID", None, "min", 2),
    "precision": Metric("precision", None, "max", 3),
    "recall": Metric("recall", None, "max", 3),
    "mig": Metric("MIG", None, "max", 3),
    "probe_r2_": Metric("probe R²", None, "max", 3),  # family: probe_r2_<factor>
    "test_nll_se": Metric("NLL std. error", "nats", None, 3, "cost"),
    "fid_ref": Metric("FID test vs. train", None, None, 2, "cost"),
    "params": Metric("parameters", None, None, 0, "cost"),
    "train_seconds": Metric("train time", "s", None, 1, "cost"),
    "train_images_per_s": Metric("train speed", "images/s", None, 0, "cost"),
    "eval_seconds": Metric("eval time", "s", None, 1, "cost"),
    "peak_memory_mb": Metric("peak memory", "MB", None, 0, "cost"),
    "best_epoch": Metric("best epoch", None, None, 1, "cost"),
}
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
        return Metric(f"IWAE bound k={match.group(1)}", "nats", "max", 2)
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
    described = RUN_COLUMNS + ["variant_of"] + sweep_columns
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
}


def latex_escape(text: str) -> str:
    """Text safe to put in a LaTeX table cell (also maps ± ↓ ↑ ² — to LaTeX)."""
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def format_cell(metric: Metric, mean: float, std: float, n: int, seeds: int) -> str:
    """`mean ± std`; just the mean with one value; `(n=…)` when some seeds lack the metric."""
    if n == 0 or not math.isfinite(mean):
        return "—"
    text = metric.format(mean)
    if n > 1 and math.isfinite(std):
        text += f" ± {metric.format(std)}"
    if n < seeds:
        text += f" (n={n})"
    return text


@dataclass
class Table:
    """One table of one dataset, in its three forms."""

    dataset: str
    kind: str  # "metrics" or "cost"
    raw: pd.DataFrame  # what the CSV holds
    markdown: str
    latex: str
    files: list[Path] = field(default_factory=list)


def make_table(
    results: Results,
    dataset: str,
    kind: str,
    references: dict | None = None,
) -> Table | None:
    """The `metrics` or `cost` table of a dataset; None when it would have no metric column."""
    dataset_references = (references or {}).get(dataset, {})
    finished = results.finished(dataset)
    ours = [m for m in results.metric_names if finished[m].notna().any()]
    referenced = sorted(
        {m for values in dataset_references.values() for m in values}, key=metric_sort_key
    )
    metrics = sorted(set(ours) | set(referenced), key=metric_sort_key)
    group = "cost" if kind == "cost" else "quality"
    metrics = [m for m in metrics if describe_metric(m).group == group]
    if not metrics:
        return None
    referenced = [m for m in referenced if m in metrics]

    raw = aggregate(results.runs, results.models_of(dataset), dataset, metrics)
    for metric in referenced:
        paper = [dataset_references.get(model, {}).get(metric) for model in raw["model"]]
        position = raw.columns.get_loc(f"{metric}_n") + 1
        raw.insert(position, f"{metric}_paper", pd.to_numeric(pd.Series(paper), errors="coerce"))

    cells: dict[str, list[str]] = {"model": list(raw["model"]), "seeds": [], "failed": []}
    cells["seeds"] = [str(n) for n in raw["seeds"]]
    cells["failed"] = [str(n) for n in raw["failed"]]
    bold: dict[str, list[bool]] = {}
    for metric in metrics:
        description = describe_metric(metric)
        winners = best_models(raw, metric, description.direction)
        header = description.header()
        cells[header] = [
            format_cell(
                description,
                r[f"{metric}_mean"],
                r[f"{metric}_std"],
                int(r[f"{metric}_n"]),
                int(r["seeds"]),
            )
            for _, r in raw.iterrows()
        ]
        bold[header] = [model in winners for model in raw["model"]]
        if metric in referenced:
            cells[description.header("paper")] = [
                "—" if pd.isna(v) else description.format(v) for v in raw[f"{metric}_paper"]
            ]
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
    latex_cells.columns = [latex_escape(c) for c in display.columns]
    latex = (
        f"% vae-zoo report: suite {results.suite}, dataset {dataset}, {kind}.\n"
        "% Mean ± sample standard deviation over finished seeds; best in bold. "
        "Needs \\usepackage{booktabs}.\n"
        + latex_cells.to_latex(
            index=False, escape=False, column_format="l" + "r" * (display.shape[1] - 1)
        )
    )
    return Table(dataset, kind, raw, markdown + "\n", latex)


def runs_table(results: Results) -> pd.DataFrame:
    """Every run, one row each, failed ones included (what `tables/runs.csv` holds)."""
    return results.runs.copy()


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
    results: Results, tables_dir: Path, references: dict | None = None
) -> tuple[list[Table], list[Path]]:
    """Write each dataset's tables as CSV, Markdown and LaTeX, plus `runs.csv`; return both."""
    tables, written = [], []
    for dataset in results.datasets:
        for kind in ("metrics", "cost"):
            table = make_table(results, dataset, kind, references)
            if table is None:
                continue
            stem = safe_name(dataset) + ("" if kind == "metrics" else "-cost")
            table.files = [
                write_text(tables_dir / f"{stem}.csv", csv_text(table.raw)),
                write_text(tables_dir / f"{stem}.md", table.markdown),
                write_text(tables_dir / f"{stem}.tex", table.latex),
            ]
            tables.append(table)
            written += table.files
    written.append(write_text(tables_dir / "runs.csv", csv_text(runs_table(results))))
    return tables, written
