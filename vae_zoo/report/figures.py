"""Figures of a suite's results: seaborn on the Agg canvas, saved byte-identically.

Byte-identity comes from: a fixed style (seaborn `whitegrid`/`paper` with the DejaVu Sans font
that ships with matplotlib, so the machine's fonts never matter), fixed sizes and dpi, no
random jitter or bootstrap (confidence intervals are Student-t intervals), a fixed order of
datasets and models, and no timestamps or software versions in the files (PNG `Software` and
PDF `CreationDate` are dropped). Figures are drawn on `Figure` objects with an Agg canvas, never
through pyplot, so building a report leaves the caller's matplotlib state alone.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.decomposition import PCA

from vae_zoo.harness.store import read_arrays
from vae_zoo.report.statistics import mean_interval
from vae_zoo.report.tables import (
    SWEEP_PREFIX,
    Results,
    describe_metric,
    safe_name,
    seed_text,
    write_bytes,
)

DPI = 130
PANEL_INCHES = (4.0, 3.0)
KL_FLOOR_NATS = 1e-4  # KL values are drawn no lower than this on the log axis
COMPARED_METRICS = ("test_nll", "test_elbo", "test_kl", "fid")
# What a sweep figure draws against the swept value, with the role each plays in the trade-off.
SWEPT_METRICS = {"test_recon": "distortion", "test_kl": "rate", "test_elbo": ""}
MAX_VALUE_TICKS = 8  # up to this many swept values are each labelled on the x-axis
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "p", "h", "*")
MAX_TRAVERSED_DIMS = 10
PDF_METADATA = {"Creator": "vae-zoo report", "Producer": None, "CreationDate": None}
PNG_METADATA = {"Software": None}


@dataclass
class ReportFigure:
    """A figure written to disk: its files (PNG first, then PDF if any) and a one-line caption."""

    files: list[Path]
    title: str
    caption: str

    @property
    def png(self) -> Path:
        return self.files[0]


def style() -> dict:
    """The matplotlib rc parameters every figure is drawn with."""
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper", font_scale=1.1)}
    rc.update(
        {
            "font.family": "sans-serif",
            "font.sans-serif": ["DejaVu Sans"],  # bundled with matplotlib: the same everywhere
            "mathtext.fontset": "dejavusans",
            "text.usetex": False,
            "axes.unicode_minus": True,
            "svg.hashsalt": "vae-zoo",
            "svg.fonttype": "path",
            "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by journals
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "image.interpolation": "nearest",
            "legend.frameon": False,
        }
    )
    return rc


def _new_figure(panels: int, columns: int = 3, panel: tuple = PANEL_INCHES,
                legend_entries: int = 0):
    """A figure on an Agg canvas with a grid of `panels` axes; unused axes hidden. It is made
    tall enough for a figure-level legend of `legend_entries` models."""
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    height = max(panel[1] * rows, legend_height(legend_entries))
    figure = Figure(figsize=(panel[0] * columns, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return figure, list(axes[:panels])


def legend_height(entries: int, row_inches: float = 0.24) -> float:
    """Inches a one-column legend of `entries` rows and a title takes."""
    return 0.8 + row_inches * entries if entries else 0.0


def _save(figure: Figure, stem: Path, *, vector: bool) -> list[Path]:
    """Write `stem.png` (and `stem.pdf`) atomically, with no timestamp or version inside."""
    outputs = [("png", PNG_METADATA)] + ([("pdf", PDF_METADATA)] if vector else [])
    written = []
    for extension, metadata in outputs:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=extension, dpi=DPI, metadata=metadata)
        # Not with_suffix: a stem may hold a dot (`mlp-vae-beta-0.5`) that is not a suffix.
        path = stem.with_name(f"{stem.name}.{extension}")
        written.append(write_bytes(path, buffer.getvalue()))
    return written


def model_palette(models: list[str]) -> dict[str, tuple]:
    """One colour per model, the same in every figure."""
    colours = sns.color_palette("colorblind" if len(models) <= 10 else "husl", len(models))
    return dict(zip(models, colours, strict=True))


def _model_markers(models: list[str]) -> dict[str, str]:
    return {model: MARKERS[i % len(MARKERS)] for i, model in enumerate(models)}


def _legend(figure: Figure, models: list[str], palette: dict, markers: dict | None = None):
    """A figure-level legend of models (lines, or markers when given)."""
    handles = [
        Line2D(
            [],
            [],
            color=palette[m],
            marker=markers[m] if markers else None,
            linestyle="none" if markers else "-",
            label=m,
        )
        for m in models
    ]
    figure.legend(handles=handles, loc="outside right upper", title="model")


def _first_finished(results: Results, dataset: str, model: str) -> pd.Series | None:
    """The finished run with the lowest seed: the one whose arrays the report shows."""
    runs = results.finished(dataset)
    runs = runs[runs["model"] == model]
    return None if runs.empty else runs.iloc[0]


# --------------------------------------------------------------------------- curves and metrics


def learning_curves(results: Results, figures_dir: Path, palette: dict) -> ReportFigure | None:
    """Validation ELBO per epoch: mean over seeds with a ±1 sd band, one panel per dataset."""
    frames = []
    for run in results.finished().itertuples():
        path = results.run_dir(run.run_id) / "history.csv"
        if not path.is_file():
            continue
        history = pd.read_csv(path)
        if {"epoch", "val_elbo"} <= set(history.columns):
            frames.append(
                history[["epoch", "val_elbo"]].assign(
                    dataset=run.dataset, model=run.model, seed=run.seed
                )
            )
    if not frames:
        return None
    curves = pd.concat(frames, ignore_index=True)
    datasets = [d for d in results.datasets if d in set(curves["dataset"])]
    with matplotlib.rc_context(style()):
        figure, axes = _new_figure(len(datasets), legend_entries=curves["model"].nunique())
        for ax, dataset in zip(axes, datasets, strict=True):
            data = curves[curves["dataset"] == dataset]
            models = [m for m in results.models if m in set(data["model"])]
            sns.lineplot(
                data=data,
                x="epoch",
                y="val_elbo",
                hue="model",
                hue_order=models,
                palette=palette,
                errorbar="sd",
                legend=False,
                ax=ax,
            )
            ax.set(title=dataset, xlabel="epoch", ylabel="validation ELBO (nats)")
        _legend(figure, [m for m in results.models if m in set(curves["model"])], palette)
        files = _save(figure, figures_dir / "learning-curves", vector=True)
    return ReportFigure(
        files,
        "Learning curves",
        "Validation ELBO per epoch: mean over finished seeds, band ±1 standard "
        "deviation; one panel per dataset.",
    )


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    """95 % Student-t interval of the mean, as the tables give it (a point with one value)."""
    interval = mean_interval(values)
    if not interval.tested:
        return interval.value, interval.value
    return interval.low, interval.high


def metric_comparison(results: Results, figures_dir: Path, palette: dict) -> ReportFigure | None:
    """Test NLL, ELBO, KL and FID per model: seed points, mean and 95 % t-interval."""
    finished = results.finished()
    metrics = [m for m in COMPARED_METRICS if m in finished and finished[m].notna().any()]
    if not metrics:
        return None
    datasets = results.datasets
    with matplotlib.rc_context(style()):
        figure, axes = _new_figure(len(metrics) * len(datasets), columns=len(datasets))
        for index, ax in enumerate(axes):
            metric, dataset = metrics[index // len(datasets)], datasets[index % len(datasets)]
            data = finished[(finished["dataset"] == dataset) & finished[metric].notna()]
            models = [m for m in results.models_of(dataset) if m in set(data["model"])]
            if not models:
                ax.set(title=dataset, xlabel=describe_metric(metric).header())
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
                ax.set(xticks=[], yticks=[])
                continue
            sns.pointplot(
                data=data,
                x=metric,
                y="model",
                order=models,
                hue="model",
                hue_order=models,
                palette=palette,
                errorbar=_t_interval,
                linestyle="none",
                marker="D",
                markersize=6,
                capsize=0.25,
                legend=False,
                ax=ax,
            )
            for position, model in enumerate(models):
                values = data.loc[data["model"] == model, metric].to_numpy()
                # Seeds just below their row, spread evenly (no random jitter: byte-identical).
                offsets = np.linspace(-0.08, 0.08, len(values)) if len(values) > 1 else [0.0]
                ax.scatter(
                    values,
                    position + 0.25 + np.asarray(offsets),
                    s=14,
                    color=palette[model],
                    alpha=0.7,
                    linewidths=0,
                    zorder=3,
                )
            ax.set(title=dataset, xlabel=describe_metric(metric).header(), ylabel="")
            ax.set_xlim(_comparison_limits(data, metric, models))
        files = _save(figure, figures_dir / "metric-comparison", vector=True)
    return ReportFigure(
        files,
        "Metric comparison",
        "Test metrics per model (rows) and dataset (columns): one small dot per seed, diamond "
        "the mean, bar its 95 % t-interval (cut at the panel edge when few seeds make it wide).",
    )


def _comparison_limits(data: pd.DataFrame, metric: str, models: list[str]) -> tuple[float, float]:
    """An axis range that shows every seed, and each interval up to half the seeds' range beyond.

    With two or three seeds a t-interval can be ten times wider than the points; letting it set
    the axis would squeeze every model into one spot.
    """
    values = data[metric].to_numpy(dtype=float)
    low, high = values.min(), values.max()
    span = high - low if high > low else max(abs(high), 1.0) * 0.1
    intervals = [_t_interval(data.loc[data["model"] == m, metric].to_numpy()) for m in models]
    view_low = min(low, max(min(i[0] for i in intervals), low - span / 2))
    view_high = max(high, min(max(i[1] for i in intervals), high + span / 2))
    if view_high == view_low:  # one value: centre it
        view_low, view_high = view_low - span / 2, view_high + span / 2
    pad = (view_high - view_low) * 0.05
    return view_low - pad, view_high + pad


def rate_distortion(results: Results, figures_dir: Path, palette: dict) -> ReportFigure | None:
    """KL (rate) against reconstruction (distortion) for every finished run."""
    finished = results.finished()
    if not {"test_kl", "test_recon"} <= set(finished.columns):
        return None
    runs = finished.dropna(subset=["test_kl", "test_recon"])
    if runs.empty:
        return None
    datasets = [d for d in results.datasets if d in set(runs["dataset"])]
    models = [m for m in results.models if m in set(runs["model"])]
    markers = _model_markers(results.models)
    with matplotlib.rc_context(style()):
        figure, axes = _new_figure(len(datasets), legend_entries=len(models))
        for ax, dataset in zip(axes, datasets, strict=True):
            data = runs[runs["dataset"] == dataset]
            present = [m for m in models if m in set(data["model"])]
            sns.scatterplot(
                data=data,
                x="test_kl",
                y="test_recon",
                hue="model",
                style="model",
                hue_order=present,
                style_order=present,
                palette=palette,
                markers={m: markers[m] for m in present},
                s=45,
                legend=False,
                ax=ax,
            )
            ax.set(
                title=dataset,
                xlabel="rate: test KL (nats)",
                ylabel="distortion: test reconstruction (nats)",
            )
        _legend(figure, models, palette, markers)
        files = _save(figure, figures_dir / "rate-distortion", vector=True)
    return ReportFigure(
        files,
        "Rate–distortion",
        "Rate (KL) against distortion (reconstruction), one point per finished "
        "run: β slides a model along the trade-off, a tighter bound shifts it.",
    )


def kl_per_dimension(results: Results, figures_dir: Path, palette: dict) -> ReportFigure | None:
    """KL of each latent dimension, sorted, with each model's active units in the legend."""
    rows = []
    for run in results.finished().itertuples():
        kl = read_arrays(results.run_dir(run.run_id), ("kl_per_dim",)).get("kl_per_dim")
        if kl is None:
            continue
        kl = np.sort(np.asarray(kl, dtype=float).ravel())[::-1]
        rows.append(
            pd.DataFrame(
                {
                    "dataset": run.dataset,
                    "model": run.model,
                    "seed": run.seed,
                    "rank": np.arange(1, len(kl) + 1),
                    "kl": kl,
                }
            )
        )
    if not rows:
        return None
    units = pd.concat(rows, ignore_index=True)
    units["kl_shown"] = units["kl"].clip(lower=KL_FLOOR_NATS)
    datasets = [d for d in results.datasets if d in set(units["dataset"])]
    with matplotlib.rc_context(style()):
        models_shown = units["model"].nunique()  # each panel has its own legend beside it
        figure, axes = _new_figure(
            len(datasets), panel=(5.8, max(3.0, legend_height(models_shown, 0.2))))
        for ax, dataset in zip(axes, datasets, strict=True):
            data = units[units["dataset"] == dataset]
            models = [m for m in results.models if m in set(data["model"])]
            sns.lineplot(
                data=data,
                x="rank",
                y="kl_shown",
                hue="model",
                hue_order=models,
                palette=palette,
                errorbar=("pi", 100),
                marker="o",
                markersize=3,
                legend=False,
                ax=ax,
            )
            ax.set_yscale("log")
            ax.set(
                title=dataset,
                xlabel="latent dimension (sorted by KL)",
                ylabel="KL per dimension (nats)",
            )
            handles = [Line2D([], [], color=palette[model],
                              label=f"{model}: {_active_units(results, dataset, model)}")
                       for model in models]
            ax.legend(
                handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0)
            )
        files = _save(figure, figures_dir / "kl-per-dimension", vector=True)
    return ReportFigure(
        files,
        "KL per latent dimension",
        "KL of each latent dimension sorted in decreasing order (line: mean, band: min–max "
        "over seeds); legend: mean active units over seeds, the runs' `active_units` (a unit "
        "is active when its posterior mean varies across test images, Cov_x(E_q[z_u]) > 0.01; "
        "Burda et al. 2016), which need not match the units with a large KL.",
    )


def _active_units(results: Results, dataset: str, model: str) -> str:
    """A model's mean `active_units` over seeds as legend text (`of` its latent units)."""
    runs = results.finished(dataset)
    runs = runs[runs["model"] == model]
    if "active_units" not in runs or runs["active_units"].isna().all():
        return "active units not measured"
    text = f"{runs['active_units'].mean():.3g} active"
    if "latent_dim" in runs and runs["latent_dim"].notna().any():
        text += f" of {runs['latent_dim'].max():g}"
    return text


def sweep_figures(results: Results, figures_dir: Path) -> list[ReportFigure]:
    """Test reconstruction, KL and ELBO against each numerically swept hyper-parameter.

    One figure `sweep-<key>` per numeric `hp_<key>` column of the runs with at least two values:
    a row per metric, a column per dataset, one line per swept model (`variant_of`, split by
    the values of the other keys swept with it) through the mean over seeds, each seed a dot.
    The x-axis is logarithmic when every value is positive and they span more than a factor
    10. No figure (an empty list) when the runs have no such column.
    """
    finished = results.finished()
    if "variant_of" not in finished:
        return []
    figures = []
    for column in [c for c in finished.columns if c.startswith(SWEEP_PREFIX)]:
        values = finished[column]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        runs = finished[values.notna()] if numeric else finished.iloc[:0]
        metrics = [m for m in SWEPT_METRICS if m in runs and runs[m].notna().any()]
        if runs[column].nunique() >= 2 and metrics:
            figures.append(_sweep_figure(results, runs, column, metrics, figures_dir))
    return figures


def _sweep_lines(runs: pd.DataFrame, column: str) -> pd.Series:
    """The line each run is drawn on: its `variant_of`, plus the other swept keys that vary."""
    others = [c for c in runs.columns
              if c.startswith(SWEEP_PREFIX) and c != column and runs[c].nunique() > 1]
    base = runs["variant_of"].fillna(runs["model"]).astype(str)

    def label(index) -> str:
        parts = [f"{c.removeprefix(SWEEP_PREFIX)}={_value_text(runs.at[index, c])}"
                 for c in others if pd.notna(runs.at[index, c])]
        return ", ".join([base[index], *parts])

    return pd.Series([label(index) for index in runs.index], index=runs.index, dtype=object)


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def _sweep_figure(
    results: Results, runs: pd.DataFrame, column: str, metrics: list[str], figures_dir: Path
) -> ReportFigure:
    """The figure of one swept key, from the finished runs that have a value for it."""
    key = column.removeprefix(SWEEP_PREFIX)
    runs = runs.assign(line=_sweep_lines(runs, column))
    lines = list(dict.fromkeys(runs["line"]))  # runs come in suite order
    palette = model_palette(lines)
    values = np.sort(runs[column].unique().astype(float))
    logarithmic = values[0] > 0 and values[-1] / values[0] > 10
    datasets = [d for d in results.datasets if d in set(runs["dataset"])]
    with matplotlib.rc_context(style()):
        figure, axes = _new_figure(len(metrics) * len(datasets), columns=len(datasets),
                                   legend_entries=len(lines))
        for index, ax in enumerate(axes):
            metric, dataset = metrics[index // len(datasets)], datasets[index % len(datasets)]
            role = SWEPT_METRICS[metric]
            ylabel = (f"{role}: " if role else "") + describe_metric(metric).header()
            ax.set(title=dataset, xlabel=key, ylabel=ylabel)
            data = runs[(runs["dataset"] == dataset) & runs[metric].notna()]
            if data.empty:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
                ax.set(xticks=[], yticks=[])
                continue
            present = [line for line in lines if line in set(data["line"])]
            common = dict(data=data, x=column, y=metric, hue="line", hue_order=present,
                          palette=palette, legend=False, ax=ax)
            sns.lineplot(**common, estimator="mean", errorbar=None, marker="D", markersize=5)
            sns.scatterplot(**common, s=14, alpha=0.6, linewidth=0, zorder=3)
            if logarithmic:
                ax.set_xscale("log")
            if len(values) <= MAX_VALUE_TICKS:
                ax.set_xticks(values, [_value_text(v) for v in values])
                ax.minorticks_off()
        _legend(figure, lines, palette)
        files = _save(figure, figures_dir / f"sweep-{safe_name(key)}", vector=True)
    return ReportFigure(
        files,
        f"Sweep of {key}",
        f"Test reconstruction (distortion), KL (rate) and ELBO against {key} "
        f"({'log' if logarithmic else 'linear'} axis), one row per metric and column per "
        "dataset: a line per swept model through the mean over seeds (diamonds), a dot per seed.",
    )


# --------------------------------------------------------------------------- images and latents


def _tile(images: np.ndarray, columns: int) -> np.ndarray:
    """(n, C, H, W) images in [0, 1] → one (rows·(H+1)−1, columns·(W+1)−1, C) grid, white gaps."""
    n, channels, height, width = images.shape
    rows = math.ceil(n / columns)
    grid = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1, channels), np.float32)
    for index, image in enumerate(np.clip(images, 0, 1)):
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        grid[top : top + height, left : left + width] = image.transpose(1, 2, 0)
    return grid


def _show(ax, grid: np.ndarray) -> None:
    if grid.shape[-1] == 1:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(grid[..., :3])
    ax.set(xticks=[], yticks=[])
    ax.grid(False)


def _interleave(originals: np.ndarray, reconstructions: np.ndarray, columns: int) -> np.ndarray:
    """Rows of originals, each followed by the row of their reconstructions."""
    n = min(len(originals), len(reconstructions)) // columns * columns
    pairs = np.stack(
        [
            originals[:n].reshape(-1, columns, *originals.shape[1:]),
            reconstructions[:n].reshape(-1, columns, *originals.shape[1:]),
        ],
        axis=1,
    )
    return pairs.reshape(-1, *originals.shape[1:])  # (2·n, C, H, W)


def samples_and_reconstructions(
    results: Results, figures_dir: Path, dataset: str, model: str
) -> ReportFigure | None:
    """Prior samples beside test images above their reconstructions, from the first seed."""
    run = _first_finished(results, dataset, model)
    if run is None:
        return None
    arrays = read_arrays(results.run_dir(run["run_id"]),
                         ("samples", "originals", "reconstructions"))
    panels = []
    if "samples" in arrays:
        panels.append(("samples from the prior", _tile(arrays["samples"][:64], 8)))
    if "originals" in arrays and "reconstructions" in arrays:
        columns = min(8, len(arrays["originals"]))
        pairs = _interleave(arrays["originals"][:32], arrays["reconstructions"][:32], columns)
        if len(pairs):
            panels.append(("test images above reconstructions", _tile(pairs, columns)))
    if not panels:
        return None
    with matplotlib.rc_context(style()):
        figure, axes = _new_figure(len(panels), panel=(3.2, 3.4))
        for ax, (title, grid) in zip(axes, panels, strict=True):
            _show(ax, grid)
            ax.set_title(title)
        figure.suptitle(f"{model} on {dataset} (seed {seed_text(run['seed'])})")
        stem = f"samples-{safe_name(dataset)}-{safe_name(model)}"
        files = _save(figure, figures_dir / stem, vector=False)
    return ReportFigure(
        files,
        f"Samples and reconstructions: {model} on {dataset}",
        f"{model} on {dataset}, seed {seed_text(run['seed'])}: decoder means "
        "of prior samples (left); test images with their reconstructions below "
        "(right).",
    )


def traversals(
    results: Results, figures_dir: Path, dataset: str, model: str
) -> ReportFigure | None:
    """Each latent dimension swept from -3 to 3 (the most informative ones, by KL)."""
    run = _first_finished(results, dataset, model)
    if run is None:
        return None
    arrays = read_arrays(results.run_dir(run["run_id"]), ("traversals", "kl_per_dim"))
    if "traversals" not in arrays or arrays["traversals"].ndim != 5:
        return None
    sweeps = arrays["traversals"]  # (latent, steps, C, H, W)
    kl = arrays.get("kl_per_dim")
    by_kl = kl is not None and len(kl) == len(sweeps)
    if by_kl:
        dims = np.argsort(-np.asarray(kl, dtype=float), kind="stable")[:MAX_TRAVERSED_DIMS]
        labels = [f"z{d} (KL {kl[d]:.2g})" for d in dims]
    else:
        dims = np.arange(min(len(sweeps), MAX_TRAVERSED_DIMS))
        labels = [f"z{d}" for d in dims]
    files = draw_traversals(sweeps, dims, labels, figures_dir, dataset, model)
    if len(dims) == len(sweeps):
        shown = "each latent dimension"
    else:
        shown = f"the first {len(dims)} latent dimensions" + (" by KL" if by_kl else "")
    return ReportFigure(
        files,
        f"Latent traversals: {model} on {dataset}",
        f"{model} on {dataset}, seed {seed_text(run['seed'])}: decoder means as {shown} of a "
        f"fixed code is swept from -3 to 3{' (rows sorted by KL)' if by_kl else ''}.",
    )


def draw_traversals(sweeps: np.ndarray, dims: np.ndarray, labels: list[str], figures_dir: Path,
                    dataset: str, model: str, label_inches: float = 2.4) -> list[Path]:
    """`traversals-<dataset>-<model>.png`: a row per latent of `dims` (of `sweeps`, (latent,
    steps, C, H, W)) named by `labels`, its images left to right; `label_inches` leaves room
    for the labels."""
    steps, height = sweeps.shape[1], sweeps.shape[3]
    grid = _tile(sweeps[dims].reshape(-1, *sweeps.shape[2:]), steps)
    with matplotlib.rc_context(style()):
        figure, (ax,) = _new_figure(1, panel=(label_inches + 0.42 * steps, 0.9 + 0.42 * len(dims)))
        _show(ax, grid)
        ax.set_yticks([i * (height + 1) + height / 2 for i in range(len(dims))], labels)
        ax.set_xlabel("latent value from -3 to 3")
        ax.set_title(f"{model} on {dataset}")
        stem = f"traversals-{safe_name(dataset)}-{safe_name(model)}"
        return _save(figure, figures_dir / stem, vector=False)


def latent_embedding(results: Results, figures_dir: Path, dataset: str) -> ReportFigure | None:
    """2-D PCA of latent means coloured by class, one panel per model (first finished seed)."""
    panels = []
    for model in results.models_of(dataset):
        run = _first_finished(results, dataset, model)
        if run is None:
            continue
        arrays = read_arrays(results.run_dir(run["run_id"]), ("latent_means", "labels"))
        if "latent_means" in arrays and "labels" in arrays:
            means = np.asarray(arrays["latent_means"], dtype=np.float64)
            if means.ndim == 2 and means.shape[1] >= 2 and len(means) >= 2:
                # Full SVD with sklearn's sign convention: the same embedding every time.
                embedded = PCA(n_components=2, svd_solver="full").fit_transform(means)
                panels.append((model, embedded, np.asarray(arrays["labels"]).ravel()))
    if not panels:
        return None
    classes = sorted({int(c) for _, _, labels in panels for c in labels})
    colours = sns.color_palette("tab10" if len(classes) <= 10 else "husl", len(classes))
    colours = dict(zip(classes, colours, strict=True))
    with matplotlib.rc_context(style()):
        figure, axes = _new_figure(len(panels), panel=(3.4, 3.2))
        for ax, (model, embedded, labels) in zip(axes, panels, strict=True):
            sns.scatterplot(
                x=embedded[:, 0],
                y=embedded[:, 1],
                hue=labels.astype(int),
                hue_order=classes,
                palette=colours,
                s=6,
                linewidth=0,
                alpha=0.8,
                legend=False,
                ax=ax,
            )
            ax.set(title=model, xlabel="PC 1", ylabel="PC 2", xticks=[], yticks=[])
        handles = [
            Line2D([], [], color=colours[c], marker="o", linestyle="none", label=str(c))
            for c in classes
        ]
        figure.legend(handles=handles, loc="outside right upper", title="class")
        stem = f"latent-{safe_name(dataset)}"
        files = _save(figure, figures_dir / stem, vector=False)
    return ReportFigure(
        files,
        f"Latent space: {dataset}",
        f"Posterior means of {dataset} test images projected on their first two "
        "principal components, coloured by class (first finished seed).",
    )


def draw_figures(results: Results, figures_dir: Path) -> list[ReportFigure]:
    """Every figure the results allow, in the order the report shows them."""
    # Imported here: the disentanglement figures are drawn with this module's helpers.
    from vae_zoo.report.disentanglement import disentanglement_figures, labelled_traversals

    palette = model_palette(results.models)
    figures = [
        learning_curves(results, figures_dir, palette),
        metric_comparison(results, figures_dir, palette),
        rate_distortion(results, figures_dir, palette),
        kl_per_dimension(results, figures_dir, palette),
        *sweep_figures(results, figures_dir),
        *disentanglement_figures(results, figures_dir),
    ]
    for dataset in results.datasets:
        figures.append(latent_embedding(results, figures_dir, dataset))
        for model in results.models_of(dataset):
            # Runs that keep `factor_mi` get their rows named after factors; the rest by KL.
            figures.append(labelled_traversals(results, figures_dir, dataset, model)
                           or traversals(results, figures_dir, dataset, model))
        for model in results.models_of(dataset):
            figures.append(samples_and_reconstructions(results, figures_dir, dataset, model))
    return [figure for figure in figures if figure is not None]
