"""Results for notebooks: a trained run as a model with its config and metrics, and a suite's
summary as a pandas DataFrame.

    import vae_zoo
    run = vae_zoo.load("results/default/runs/circles-mlp-vae-s0-1a2b3c4d5e")
    data = run.dataset()                    # the very data it was trained and evaluated on
    table = vae_zoo.load_results("results", "default")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vae_zoo.data import ImageData, load_dataset
from vae_zoo.errors import UserError
from vae_zoo.harness.checkpoints import load_model
from vae_zoo.harness.store import IDENTITY_COLUMNS, read_json
from vae_zoo.harness.suite import Suite, load_suite
from vae_zoo.model import VAE

# summary.csv columns that are names or ids, never numbers (an eval_id may be all digits).
TEXT_COLUMNS = [name for name in IDENTITY_COLUMNS if name != "seed"]


@dataclass(frozen=True)
class DataSpec:
    """The data a run saw, as its config.json records it."""

    name: str
    options: dict
    fingerprint: str
    image_shape: tuple[int, ...]

    @classmethod
    def from_config(cls, config: dict) -> DataSpec:
        dataset = config["dataset"]
        return cls(dataset["name"], dict(dataset["options"]), dataset["fingerprint"],
                   tuple(dataset["image_shape"]))


@dataclass(frozen=True)
class LoadedRun:
    """A run read back from its directory: the trained model and what the run recorded."""

    model: VAE  # trained, in evaluation mode
    config: dict  # config.json
    metrics: dict  # the `metrics` of metrics.json ({} when the run has none)
    run_dir: Path
    data: DataSpec

    def dataset(self) -> ImageData:
        """The run's dataset, loaded again, on the model's device.

        Raises `UserError` when its fingerprint differs from the recorded one: the data (or the
        code that prepares it) changed since the run, so the run's metrics are not about it.
        """
        data = load_dataset(self.data.name, self.data.options)
        fingerprint = data.fingerprint()
        if fingerprint != self.data.fingerprint:
            raise UserError(
                f"{self.run_dir}: dataset '{self.data.name}' has fingerprint {fingerprint} "
                f"here but {self.data.fingerprint} when the run was made; the data changed "
                f"since, so the run's metrics do not describe it")
        return data.to(next(self.model.parameters()).device)


def load(run_dir: str | Path, device: str = "cpu", *, final: bool = False) -> LoadedRun:
    """The trained model of a run directory with its config, metrics and data description.

    `final` loads the last epoch's weights instead of the selected ones (the ones every metric
    is measured on). Raises `UserError` when the run has no readable config or no checkpoint
    (`[train] keep_checkpoints = false`, shipped results, or a training that did not finish).
    """
    run_dir = Path(run_dir)
    model, config = load_model(run_dir, device, final=final)
    record = read_json(run_dir / "metrics.json") or {}
    try:
        data = DataSpec.from_config(config)
    except (KeyError, TypeError) as error:
        raise UserError(f"{run_dir}/config.json: no dataset description ({error})") from None
    return LoadedRun(model, config, dict(record.get("metrics") or {}), run_dir, data)


def load_results(results_dir: str | Path, suite: str | Path | Suite) -> pd.DataFrame:
    """A suite's summary.csv as a DataFrame: one row per cell of its plan when it was written.

    `suite` is a suite name, a suite file, or a `Suite`. The identities are columns: `run_id`,
    `train_id` (the training identity's digest, the run id's last part) and `eval_id`; `seed`
    is an integer and metrics are floats (NaN where a run lacks them).
    """
    name = suite_name(suite)
    path = Path(results_dir) / name / "summary.csv"
    if not path.is_file():
        raise UserError(f"no summary of suite '{name}' at {path}; `vae-zoo summary SUITE` "
                        f"rebuilds it from the runs, `vae-zoo run SUITE` runs the suite")
    try:
        table = pd.read_csv(path, dtype={column: str for column in TEXT_COLUMNS})
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise UserError(f"{path}: not a readable summary ({error})") from None
    missing = [column for column in IDENTITY_COLUMNS if column not in table.columns]
    if missing:
        raise UserError(f"{path}: no column {', '.join(missing)}; rebuild it with "
                        f"`vae-zoo summary SUITE`")
    for column in TEXT_COLUMNS:
        table[column] = table[column].fillna("")
    table["seed"] = table["seed"].astype(int)
    table.insert(table.columns.get_loc("run_id") + 1, "train_id",
                 table["run_id"].str.rsplit("-", n=1).str[-1])
    return table


def suite_name(suite: str | Path | Suite) -> str:
    """The name of a suite given as a `Suite`, a suite file (read for its `name`) or a name."""
    if isinstance(suite, Suite):
        return suite.name
    if Path(suite).suffix == ".toml":
        return load_suite(str(suite)).name
    return str(suite)
