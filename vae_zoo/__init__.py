"""vae-zoo: a reproducible benchmark suite for variational autoencoders.

`import vae_zoo` stays cheap (no torch): `load` and `load_results` import what they need when
called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from vae_zoo.harness.loading import LoadedRun
    from vae_zoo.harness.suite import Suite

__version__ = "0.1.0"
__all__ = ["__version__", "load", "load_results"]


def load(run_dir: str | Path, device: str = "cpu", *, final: bool = False) -> LoadedRun:
    """A trained run read back from its directory (`results/<suite>/runs/<run_id>`).

    Returns a `LoadedRun`: `model` (trained, in evaluation mode, on `device`), `config`,
    `metrics`, `run_dir`, `data` (name, options, fingerprint, image shape) and `dataset()`, which
    loads the run's data and checks it is the data the run saw. `final` loads the last epoch's
    weights instead of the selected ones. See `vae_zoo.harness.loading.load`.
    """
    from vae_zoo.harness.loading import load as load_run

    return load_run(run_dir, device, final=final)


def load_results(results_dir: str | Path, suite: str | Path | Suite) -> pd.DataFrame:
    """A suite's `summary.csv` (`<results_dir>/<suite>/summary.csv`) as a pandas DataFrame, with
    `run_id`, `train_id` and `eval_id` columns. See `vae_zoo.harness.loading.load_results`."""
    from vae_zoo.harness.loading import load_results as load_summary

    return load_summary(results_dir, suite)
