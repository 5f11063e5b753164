"""Figures of a disentanglement study, drawn like the rest of the report (`figures.py`: same
style, sizes, palette and byte-identical files).

- `metrics_against_beta`: each disentanglement metric against β for the runs of a β sweep, a
  dot per seed, the mean over seeds with its 95 % Student-t band, the unswept models as dashed
  lines at their mean.
- `metric_boxes`: a box per model and metric over seeds, the seeds on top (as Locatello et al.
  2019 draw them: the seed matters about as much as the objective).
- `metric_rank_correlation`: Spearman's rank correlation between the metrics over every
  finished run of a dataset (as in Locatello et al. 2019: which metrics agree).
- `labelled_traversals`: the latent traversals with each row named after the factor the latent
  code shares most information with (`factor_mi`, MIG's normalised mutual information).

Each returns None when the results do not allow it. `rank_correlation` and `traversal_labels`
are the pure computations behind the last two.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.lines import Line2D

from vae_zoo.harness.store import read_arrays, read_json
from vae_zoo.report.figures import (
    MAX_TRAVERSED_DIMS,
    MAX_VALUE_TICKS,
    ReportFigure,
    _first_finished,
    _new_figure,
    _save,
    _sweep_lines,
    _t_interval,
    _value_text,
    draw_traversals,
    model_palette,
    style,
)
from vae_zoo.report.tables import SWEEP_PREFIX, Results, describe_metric, seed_text

# The disentanglement metrics of `tables.METRICS`, in disentanglement_lib's order.
DISENTANGLEMENT_METRICS = ("beta_vae", "factor_vae", "mig", "dci_disentanglement",
                           "dci_completeness", "dci_informativeness", "sap", "modularity",
                           "explicitness")
BETA_COLUMN = f"{SWEEP_PREFIX}beta"
# A latent code whose normalised mutual information with every factor is below this is shown as
# carrying no factor. A chosen cut-off, not a test: MIG's histogram estimate is biased upwards,
# so independent variables score a little above 0.
NEGLIGIBLE_MI = 0.05
# Boxes of one metric alone repeat its table row; the figure is there to set metrics side by
# side (suites that measure only MIG, as the factors track does, get none).
MIN_BOXED_METRICS = 2
# Nats of mean KL per dimension below which a latent code is inactive (collapsed to the prior).
INACTIVE_KL = 0.01
MIN_CORRELATED_RUNS = 3  # a rank correlation of two runs is always ±1
COLUMNS = 3  # panels per row when a figure shows one dataset


def measured_metrics(runs: pd.DataFrame) -> list[str]:
    """The disentanglement metrics that some of `runs` have, in DISENTANGLEMENT_METRICS order."""
    return [m for m in DISENTANGLEMENT_METRICS if m in runs and runs[m].notna().any()]


def disentanglement_figures(results: Results, figures_dir: Path) -> list[ReportFigure]:
    """The figures of the disentanglement metrics the results hold (none when they hold none)."""
    figures = [
        metrics_against_beta(results, figures_dir),
        metric_boxes(results, figures_dir),
        metric_rank_correlation(results, figures_dir),
    ]
    return [figure for figure in figures if figure is not None]


def _panels(metrics: list[str], datasets: list[str]) -> tuple[list[tuple[str, str]], int]:
    """(metric, dataset) of each panel and the number of columns: a row per metric and a column
    per dataset, or the metrics of a single dataset wrapped COLUMNS to a row."""
    panels = [(metric, dataset) for metric in metrics for dataset in datasets]
    return panels, len(datasets) if len(datasets) > 1 else min(COLUMNS, len(metrics))


def _seed_count(runs: pd.DataFrame, metrics: list[str]) -> str:
    """How many seeds each (dataset, model) has of each metric: `5 seeds` or `3–5 seeds`."""
    counts = runs.groupby(["dataset", "model"])[metrics].count().to_numpy().ravel()
    low, high = int(counts[counts > 0].min()), int(counts.max())
    if low == high:
        return f"{low} seed{'' if low == 1 else 's'}"
    return f"{low}–{high} seeds"


def _not_measured(ax) -> None:
    ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    ax.set(xticks=[], yticks=[])


# --------------------------------------------------------------------------- metrics against β


def metrics_against_beta(results: Results, figures_dir: Path) -> ReportFigure | None:
    """Every disentanglement metric against β (`disentanglement-beta`), a panel per metric and
    dataset: for each swept model (`variant_of`) a dot per seed and a line through the mean
    over seeds with its 95 % Student-t band; each unswept model of the dataset a dashed line at
    its mean. A log2 axis when β is positive and spans more than a factor 10. None without a
    numeric `hp_beta` column holding two values, or without a disentanglement metric."""
    finished = results.finished()
    if ("variant_of" not in finished or BETA_COLUMN not in finished
            or not pd.api.types.is_numeric_dtype(finished[BETA_COLUMN])):
        return None
    swept = finished[finished[BETA_COLUMN].notna()]
    metrics = measured_metrics(swept)
    if swept[BETA_COLUMN].nunique() < 2 or not metrics:
        return None
    swept = swept.assign(line=_sweep_lines(swept, BETA_COLUMN))
    datasets = [d for d in results.datasets if d in set(swept["dataset"])]
    unswept = finished[finished[BETA_COLUMN].isna() & finished["dataset"].isin(datasets)]
    references = [m for m in results.models if m in set(unswept["model"])
                  and unswept.loc[unswept["model"] == m, metrics].notna().any(axis=None)]
    lines = list(dict.fromkeys(swept["line"]))
    palette = model_palette(list(dict.fromkeys(lines + references)))
    betas = np.sort(swept[BETA_COLUMN].unique().astype(float))
    logarithmic = betas[0] > 0 and betas[-1] / betas[0] > 10
    panels, columns = _panels(metrics, datasets)
    with matplotlib.rc_context(style()):
        figure, axes = _new_figure(len(panels), columns=columns,
                                   legend_entries=len(lines) + len(references))
        for ax, (metric, dataset) in zip(axes, panels, strict=True):
            label = describe_metric(metric).header()
            ax.set(title=dataset if len(datasets) > 1 else label)
            data = swept[(swept["dataset"] == dataset) & swept[metric].notna()]
            if data.empty:
                _not_measured(ax)
                continue
            present = [line for line in lines if line in set(data["line"])]
            common = dict(data=data, x=BETA_COLUMN, y=metric, hue="line", hue_order=present,
                          palette=palette, legend=False, ax=ax)
            sns.lineplot(**common, estimator="mean", errorbar=_t_interval, err_style="band",
                         marker="D", markersize=5)
            sns.scatterplot(**common, s=14, alpha=0.6, linewidth=0, zorder=3)
            others = unswept[(unswept["dataset"] == dataset) & unswept[metric].notna()]
            for model in [m for m in references if m in set(others["model"])]:
                mean = others.loc[others["model"] == model, metric].mean()
                ax.axhline(mean, color=palette[model], linestyle="--", linewidth=1.2)
            if logarithmic:
                ax.set_xscale("log", base=2)
            ax.set_xlim(_beta_limits(betas, logarithmic))  # the same in every panel
            if len(betas) <= MAX_VALUE_TICKS:
                ax.set_xticks(betas, [_value_text(b) for b in betas])
                ax.minorticks_off()
            # After seaborn, which names the axes after the columns.
            ax.set(xlabel="β", ylabel=label if len(datasets) > 1 else "")
        if len(datasets) == 1:
            figure.suptitle(datasets[0])
        handles = [Line2D([], [], color=palette[line], marker="D", label=line) for line in lines]
        handles += [Line2D([], [], color=palette[model], linestyle="--", label=f"{model} (mean)")
                    for model in references]
        figure.legend(handles=handles, loc="outside right upper", title="model")
        files = _save(figure, figures_dir / "disentanglement-beta", vector=True)
    reference_text = ("; dashed: the mean of each unswept model over its seeds"
                      if references else "")
    return ReportFigure(
        files,
        "Disentanglement against β",
        f"Disentanglement metrics of the finished runs against β "
        f"({'log2' if logarithmic else 'linear'} axis), a panel per metric"
        f"{' and dataset' if len(datasets) > 1 else ''}: a dot per seed ("
        f"{_seed_count(swept, metrics)} per β), the line through their mean, band its 95 % "
        f"Student-t interval{reference_text}.",
    )


def _beta_limits(betas: np.ndarray, logarithmic: bool) -> tuple[float, float]:
    """The β axis of every panel: each β with a margin (a ratio on a log axis)."""
    if logarithmic:
        margin = (betas[-1] / betas[0]) ** 0.05
        return betas[0] / margin, betas[-1] * margin
    margin = 0.05 * (betas[-1] - betas[0])
    return betas[0] - margin, betas[-1] + margin


# --------------------------------------------------------------------------- boxes per model


def metric_boxes(results: Results, figures_dir: Path) -> ReportFigure | None:
    """A box per model over its seeds for each disentanglement metric (`disentanglement-boxes`),
    a panel per metric and dataset, models in the suite's order, every seed a dot on its box.
    None when fewer than MIN_BOXED_METRICS disentanglement metrics were measured."""
    finished = results.finished()
    metrics = measured_metrics(finished)
    if len(metrics) < MIN_BOXED_METRICS:
        return None
    measured = finished[finished[metrics].notna().any(axis=1)]
    datasets = [d for d in results.datasets if d in set(measured["dataset"])]
    palette = model_palette(results.models)
    panels, columns = _panels(metrics, datasets)
    most_models = max(measured.groupby("dataset")["model"].nunique())
    with matplotlib.rc_context(style()):
        figure, axes = _new_figure(len(panels), columns=columns,
                                   panel=(4.0, max(3.0, 0.9 + 0.32 * most_models)))
        for index, (ax, (metric, dataset)) in enumerate(zip(axes, panels, strict=True)):
            label = describe_metric(metric).header()
            ax.set(title=dataset if len(datasets) > 1 else label)
            of_dataset = measured[measured["dataset"] == dataset]
            models = [m for m in results.models_of(dataset) if m in set(of_dataset["model"])]
            data = of_dataset[of_dataset[metric].notna()]
            if data.empty:
                _not_measured(ax)
                continue
            with warnings.catch_warnings():
                # seaborn 0.13 passes matplotlib 3.11 the deprecated `vert`, once per box.
                warnings.filterwarnings("ignore", "vert: bool", MatplotlibDeprecationWarning)
                sns.boxplot(data=data, x=metric, y="model", order=models, hue="model",
                            hue_order=models, palette=palette, showfliers=False, width=0.6,
                            linewidth=1, boxprops={"alpha": 0.55}, legend=False, ax=ax)
            for position, model in enumerate(models):
                values = data.loc[data["model"] == model, metric].to_numpy()
                if not len(values):  # this model's row stays empty
                    continue
                # Seeds spread evenly across the box (no random jitter: byte-identical).
                offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
                ax.scatter(values, position + np.asarray(offsets), s=12, color="0.15",
                           linewidths=0, zorder=3)
            # After seaborn, which names the axes after the columns; the dots' autoscaling
            # would hide the rows of models without this metric.
            ax.set(xlabel=label if len(datasets) > 1 else "", ylabel="",
                   ylim=(len(models) - 0.5, -0.5))
            # A dataset's panels share their rows: in a row of them, the first names the models.
            if len(datasets) == 1 and index % columns:
                ax.tick_params(labelleft=False)
        if len(datasets) == 1:
            figure.suptitle(datasets[0])
        files = _save(figure, figures_dir / "disentanglement-boxes", vector=True)
    return ReportFigure(
        files,
        "Disentanglement per model",
        f"Disentanglement metrics per model, a panel per metric"
        f"{' and dataset' if len(datasets) > 1 else ''}: the box spans the quartiles over "
        f"the finished seeds ({_seed_count(measured, metrics)} per model), the line in it the "
        "median, whiskers up to 1.5 times the box beyond it; a dot per seed. No interval: "
        "the boxes show the spread of seeds, not the uncertainty of a mean.",
    )


# --------------------------------------------------------------------------- rank correlation


def rank_correlation(runs: pd.DataFrame,
                     metrics: Sequence[str] = DISENTANGLEMENT_METRICS) -> pd.DataFrame | None:
    """Spearman's rank correlation between `metrics` over `runs` (a metric × metric table),
    each pair over the runs that have both (at least MIN_CORRELATED_RUNS, else NaN). Metrics
    that are missing or take a single value are left out; None when fewer than two remain or
    fewer than MIN_CORRELATED_RUNS runs have any of them."""
    varying = [m for m in metrics if m in runs and runs[m].nunique() >= 2]
    values = runs[varying].astype(float).dropna(how="all")
    if len(varying) < 2 or len(values) < MIN_CORRELATED_RUNS:
        return None
    return values.corr(method="spearman", min_periods=MIN_CORRELATED_RUNS)


def metric_rank_correlation(results: Results, figures_dir: Path) -> ReportFigure | None:
    """Heatmap of `rank_correlation` between the disentanglement metrics over the finished runs
    of each dataset (`disentanglement-correlation`), a panel per dataset, colours fixed to
    [-1, 1]; None when no dataset has enough runs and varying metrics."""
    panels = []
    for dataset in results.datasets:
        runs = results.finished(dataset)
        matrix = rank_correlation(runs)
        if matrix is not None:
            counted = runs[list(matrix.columns)].notna().any(axis=1)
            panels.append((dataset, matrix, int(counted.sum()), runs[counted]))
    if not panels:
        return None
    size = max(len(matrix) for _, matrix, _, _ in panels)
    with matplotlib.rc_context(style()):
        figure, axes = _new_figure(len(panels), columns=2,
                                   panel=(3.2 + 0.6 * size, 1.8 + 0.5 * size))
        for ax, (dataset, matrix, count, _) in zip(axes, panels, strict=True):
            labels = [describe_metric(m).label for m in matrix.columns]
            sns.heatmap(matrix, vmin=-1, vmax=1, center=0, cmap="vlag", annot=True, fmt=".2f",
                        annot_kws={"size": 7}, linewidths=0.5,
                        xticklabels=labels, yticklabels=labels,
                        cbar_kws={"label": "Spearman ρ", "shrink": 0.8}, ax=ax)
            ax.tick_params(axis="x", labelrotation=45)
            for text in ax.get_xticklabels():
                text.set_horizontalalignment("right")
            ax.set_title(f"{dataset} ({count} runs)")
        files = _save(figure, figures_dir / "disentanglement-correlation", vector=True)
    counts = "; ".join(
        f"{dataset}: {count} runs of {runs['model'].nunique()} models, "
        f"{_seed_count(runs, list(matrix.columns))} each"
        for dataset, matrix, count, runs in panels)
    return ReportFigure(
        files,
        "Agreement of the disentanglement metrics",
        f"Spearman rank correlation between the disentanglement metrics over the finished runs "
        f"({counts}), every model and seed a run, each pair over the runs that have both "
        f"(blank where fewer than {MIN_CORRELATED_RUNS} do); colours from −1 to 1; metrics "
        "that take one value are left out. Point estimates, no interval.",
    )


# --------------------------------------------------------------------------- labelled traversals


def traversal_labels(factor_mi_top: np.ndarray, factor_names: Sequence[str],
                     threshold: float = NEGLIGIBLE_MI,
                     kl: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """The order to show latent traversals in and their labels.

    `factor_mi_top` (latent, factor) holds each traversed code's mutual information with each
    factor over the factor's entropy. Codes come most informative first (by their largest
    value; ties in code order); code d is labelled `zd → <factor> (<value>)` after its most
    informative factor, or `zd → no factor` when every value is below `threshold`. Given the
    codes' mean KL per dimension `kl` (nats), a code below `INACTIVE_KL` carries no
    information about the image (its tiny variations can still correlate with a factor once
    binned over their own range, as MIG bins them), so it comes last, labelled `zd inactive`.
    Returns (order, labels) with labels[i] naming code order[i].
    """
    factor_mi_top = np.asarray(factor_mi_top, dtype=np.float64)
    if factor_mi_top.ndim != 2 or factor_mi_top.shape[1] != len(factor_names):
        raise ValueError(f"factor_mi of shape {factor_mi_top.shape} does not match "
                         f"{len(factor_names)} factor names")
    strongest = np.nan_to_num(factor_mi_top, nan=0.0)
    best, information = strongest.argmax(axis=1), strongest.max(axis=1)
    inactive = (np.zeros(len(strongest), dtype=bool) if kl is None
                else np.asarray(kl, dtype=np.float64) < INACTIVE_KL)
    order = np.lexsort((-information, inactive))  # active first, then most informative
    labels = [f"z{d} inactive" if inactive[d]
              else f"z{d} → {factor_names[best[d]]} ({information[d]:.2f})"
              if information[d] >= threshold else f"z{d} → no factor" for d in order]
    return order, labels


def recorded_factor_names(config: dict | None, count: int) -> list[str] | None:
    """The factor names a run's config.json records (`dataset.factor_names`), or None when it
    records no list of `count` names."""
    dataset = (config or {}).get("dataset")
    names = dataset.get("factor_names") if isinstance(dataset, dict) else None
    if isinstance(names, list) and len(names) == count and all(isinstance(n, str) for n in names):
        return names
    return None


def labelled_traversals(
    results: Results, figures_dir: Path, dataset: str, model: str,
    factor_names: Sequence[str] | None = None,
) -> ReportFigure | None:
    """The latent traversals of the first finished seed (as `figures.traversals`), each row
    labelled with its latent code's most informative factor (`traversal_labels`), rows in
    that order. Factor names: `factor_names`, else the run's config.json
    `dataset.factor_names`, else `factor 0`, `factor 1`, .... None when the run keeps no
    traversals or no `factor_mi` covering their latent codes."""
    run = _first_finished(results, dataset, model)
    if run is None:
        return None
    run_dir = results.run_dir(run["run_id"])
    arrays = read_arrays(run_dir, ("traversals", "factor_mi", "kl_per_dim"))
    sweeps, factor_mi = arrays.get("traversals"), arrays.get("factor_mi")
    if (sweeps is None or sweeps.ndim != 5 or factor_mi is None or factor_mi.ndim != 2
            or len(factor_mi) < len(sweeps) or not factor_mi.shape[1]):
        return None
    # factor_mi has a row per latent code of every layer, bottom first; traversals sweep the top.
    top = factor_mi[-len(sweeps):]  # (top latent, factor)
    names = list(factor_names) if factor_names is not None else None
    if names is None or len(names) != top.shape[1]:
        names = recorded_factor_names(read_json(run_dir / "config.json"), top.shape[1])
    numbered = names is None
    if numbered:
        names = [f"factor {i}" for i in range(top.shape[1])]
    kl = arrays.get("kl_per_dim")
    kl = kl[-len(sweeps):] if kl is not None and len(kl) == len(factor_mi) else None
    order, labels = traversal_labels(top, names, kl=kl)
    order, labels = order[:MAX_TRAVERSED_DIMS], labels[:MAX_TRAVERSED_DIMS]
    files = draw_traversals(sweeps, order, labels, figures_dir, dataset, model,
                            label_inches=3.0)
    shown = ("each latent dimension" if len(order) == len(sweeps)
             else f"the {len(order)} latent dimensions most informative about a factor")
    return ReportFigure(
        files,
        f"Latent traversals: {model} on {dataset}",
        f"{model} on {dataset}, one seed ({seed_text(run['seed'])}): decoder means as {shown} "
        "of a fixed code is swept from -3 to 3. Each row is named after the factor its code "
        "shares most information with, as a fraction of the factor's entropy (0–1, MIG's "
        f"estimate), rows sorted by it; below {NEGLIGIBLE_MI:g}: no factor; codes with a KL "
        f"below {INACTIVE_KL:g} nats are inactive and come last"
        + ("; the run records no factor names, so factors are numbered" if numbered else "")
        + ".",
    )
