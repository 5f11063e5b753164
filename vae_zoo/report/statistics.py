"""The statistics behind the report's numbers: each model's mean, spread and count over seeds, the
best model on a metric, and how far it leads the runner-up.

Plain pandas over a runs table (one row per run, its metrics as columns); the tables and the
page only format what these functions compute, so every reported number comes from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vae_zoo.harness.store import FINISHED


def aggregate(runs: pd.DataFrame, models: list[str], dataset: str,
              metrics: list[str]) -> pd.DataFrame:
    """One row per model of `models` (in that order): finished and failed seed counts, then
    mean/std/n of each metric over the model's finished runs on `dataset`.

    The standard deviation is the sample one (ddof=1); NaN with fewer than two values. A run
    missing a metric is left out of that metric's n.
    """
    runs = runs[runs["dataset"] == dataset]
    rows = []
    for model in models:
        model_runs = runs[runs["model"] == model]
        finished = model_runs[model_runs["status"] == FINISHED]
        row = {
            "dataset": dataset,
            "model": model,
            "seeds": len(finished),
            "failed": len(model_runs) - len(finished),
        }
        for metric in metrics:
            values = finished[metric].dropna() if metric in finished else pd.Series(dtype=float)
            row[f"{metric}_mean"] = values.mean() if len(values) else np.nan
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{metric}_n"] = len(values)
        rows.append(row)
    return pd.DataFrame(rows)


def ranked(table: pd.DataFrame, metric: str, direction: str) -> pd.DataFrame:
    """The rows of an `aggregate` table that have a mean on `metric`, best first ("min": lowest
    first; "max": highest first); ties keep the table's order."""
    column = f"{metric}_mean"
    if column not in table:
        return table.iloc[0:0]
    rows = table.dropna(subset=[column])
    return rows.sort_values(column, ascending=direction == "min", kind="stable")


def best_models(table: pd.DataFrame, metric: str, direction: str | None) -> list[str]:
    """The models with the best mean on a metric that has a direction (ties all win).

    Nothing is marked when the metric has no better direction or fewer than two models have it.
    """
    if direction is None:
        return []
    rows = ranked(table, metric, direction)
    if len(rows) < 2:
        return []
    best = rows[f"{metric}_mean"].iloc[0]
    return [model for model, mean in zip(rows["model"], rows[f"{metric}_mean"]) if mean == best]


@dataclass(frozen=True)
class Lead:
    """The best model(s) on a metric and their lead over the runner-up.

    `clear` is True when the gap between the means exceeds the sum of the two models' sample
    standard deviations over seeds (a deliberately conservative rule of thumb), None when a
    spread is unknown (one seed) or there is no runner-up.
    """

    best: list[str]  # more than one when they tie
    runner_up: str | None
    gap: float  # |best mean - runner-up mean|; NaN without a runner-up
    spread: float  # std of the best + std of the runner-up; NaN when either is unknown

    @property
    def clear(self) -> bool | None:
        if self.runner_up is None or math.isnan(self.spread):
            return None
        return bool(self.gap > self.spread)


def lead(table: pd.DataFrame, metric: str, direction: str) -> Lead | None:
    """Who is best on `metric` and by how much; None when no model has the metric."""
    rows = ranked(table, metric, direction)
    if rows.empty:
        return None
    mean, std = f"{metric}_mean", f"{metric}_std"
    best = rows.iloc[0]
    tied = rows[rows[mean] == best[mean]]
    others = rows[rows[mean] != best[mean]]
    if others.empty:
        return Lead(list(tied["model"]), None, math.nan, math.nan)
    second = others.iloc[0]
    return Lead(list(tied["model"]), second["model"], float(abs(best[mean] - second[mean])),
                float(best[std] + second[std]))
