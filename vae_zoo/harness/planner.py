"""Planning a suite: each cell's identities and what it needs (nothing, an evaluation, a training),
and the runs in the results directory that the plan does not use (stale runs).

Planning trains nothing and writes nothing; it loads each dataset once to fingerprint it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

from vae_zoo.data import ImageData, load_dataset
from vae_zoo.harness import identity
from vae_zoo.harness.store import CORRUPT_DIR, FAILED, FINISHED, SuiteStore
from vae_zoo.harness.suite import Cell, Suite
from vae_zoo.harness.sweeps import format_value

DONE, EVALUATE, TRAIN = "finished", "to evaluate", "to train"


@cache
def cached_dataset(name: str, options_items: tuple) -> ImageData:
    """Each dataset is loaded once per process, whatever the number of cells using it."""
    return load_dataset(name, dict(options_items))


def dataset_for(cell: Cell) -> ImageData:
    return cached_dataset(cell.dataset, tuple(sorted(cell.dataset_options.items())))


@dataclass(frozen=True)
class PlannedCell:
    """One cell of the plan: its identities and what it needs."""

    cell: Cell
    run_id: str  # names the run directory; ends with the training identity's digest
    eval_id: str  # the evaluation identity's digest
    fingerprint: str  # of the cell's data
    training: dict  # the training identity
    evaluation: dict  # the evaluation identity
    action: str  # DONE, EVALUATE or TRAIN
    reason: str = ""  # why it needs what it needs
    failed: bool = False  # its last attempt (with these identities) failed: it is retried

    @property
    def status(self) -> str:
        """As `vae-zoo plan` shows it: finished, to evaluate, to train, or failed (retried)."""
        return "failed" if self.failed else self.action

    def summary_row(self) -> dict:
        """Its identity columns in summary.csv (see `store.IDENTITY_COLUMNS`): the store adds
        status, reason and metrics from its run."""
        model = self.cell.model
        return {"run_id": self.run_id, "eval_id": self.eval_id, "suite": self.cell.suite,
                "dataset": self.cell.dataset, "model": model.name,
                "variant_of": model.variant_of, "seed": self.cell.seed,
                "device": self.training["device"],
                **{f"hp_{key}": format_value(value) if isinstance(value, list) else value
                   for key, value in model.sweep.items()}}

    def config(self, device: str, image_shape: tuple[int, ...] | None = None,
               factor_names: tuple[str, ...] = ()) -> dict:
        """config.json: the resolved configuration, the identities and their digests (and,
        from the loaded data, the image shape and the names of the true factors, if any)."""
        config = {"run_id": self.run_id, "train_id": self.run_id.rsplit("-", 1)[1],
                  "eval_id": self.eval_id, **self.cell.config(self.fingerprint),
                  "device": device,
                  "identity": {"training": self.training, "evaluation": self.evaluation}}
        if image_shape is not None:
            config["dataset"]["image_shape"] = list(image_shape)
        if factor_names:
            config["dataset"]["factor_names"] = list(factor_names)
        return config


@dataclass(frozen=True)
class Plan:
    suite: Suite
    device: str
    cells: list[PlannedCell]
    stale: list[dict]  # rows of stale.csv (`store.STALE_COLUMNS`)

    def count(self, action: str) -> int:
        return sum(planned.action == action for planned in self.cells)

    def headline(self) -> str:
        to_train, to_evaluate = self.count(TRAIN), self.count(EVALUATE)
        failed = sum(planned.failed for planned in self.cells)
        retried = f"; {failed} of them failed last time" if failed else ""
        return (f"suite {self.suite.name}: {len(self.cells)} cells on "
                f"{identity.device_class(self.device)}; {self.count(DONE)} finished, "
                f"{to_train + to_evaluate} to run ({to_train} to train, {to_evaluate} to "
                f"evaluate{retried}), {len(self.stale)} stale{self._stale_detail()}")

    def _stale_detail(self) -> str:
        evaluations = sum(row["stale"] == "evaluation" for row in self.stale)
        return f" ({evaluations} of them earlier evaluations of planned cells)" \
            if evaluations else ""

    def summary_rows(self) -> list[dict]:
        """The identity columns of every planned cell, for `SuiteStore.write_summary`."""
        return [planned.summary_row() for planned in self.cells]


def plan_suite(suite: Suite, store: SuiteStore, device: str, *, force: bool = False) -> Plan:
    """Every cell of `suite` with its identities and action, and the stale runs of `store`."""
    fingerprints: dict[str, str] = {}  # by dataset: every cell of a suite shares its options
    cells = []
    for cell in suite.cells():
        data = dataset_for(cell)
        if cell.dataset not in fingerprints:
            fingerprints[cell.dataset] = data.fingerprint()
        fingerprint = fingerprints[cell.dataset]
        training = identity.training_identity(cell, fingerprint, device)
        evaluation = identity.evaluation_identity(cell, device, test_size=len(data.test),
                                                  val_size=len(data.val))
        run_id = identity.run_id(cell, identity.digest(training))
        eval_id = identity.digest(evaluation)
        planned = PlannedCell(cell, run_id, eval_id, fingerprint, training, evaluation, DONE)
        action, reason = cell_action(store, planned, force)
        corrupt = store.run_dir(run_id).exists() and store.corruption(run_id) is not None
        record = {} if corrupt else store.read_metrics(run_id) or {}
        failed = (not force and record.get("eval_id") == eval_id
                  and record.get("status") == FAILED)
        cells.append(replace(planned, action=action, reason=reason, failed=failed))
    return Plan(suite, device, cells, _stale_runs(store, cells))


def cell_action(store: SuiteStore, planned: PlannedCell, force: bool = False) -> tuple[str, str]:
    """What a cell needs given the results in `store`, and why."""
    run_id, eval_id, evaluation = planned.run_id, planned.eval_id, planned.evaluation
    if force:
        return TRAIN, "--force"
    if not store.run_dir(run_id).exists():
        return TRAIN, "new cell"
    corruption = store.corruption(run_id)
    if corruption is not None:
        return TRAIN, (f"its run is corrupt: {corruption}; running the suite moves it to "
                       f"{CORRUPT_DIR}/ and trains the cell again")
    record = store.read_metrics(run_id)
    if record is None:
        return TRAIN, "its run directory has no readable metrics.json"
    current = record.get("eval_id") == eval_id
    if current and record.get("status") == FINISHED:
        return DONE, ""
    training = store.read_training(run_id)
    if training is None or training.get("status") != FINISHED:
        return TRAIN, f"the last attempt failed ({record.get('reason')}); retrying"
    if current:
        why = f"its evaluation failed ({record.get('reason')}); retrying"
    else:
        config = store.read_config(run_id) or {}
        recorded = (config.get("identity") or {}).get("evaluation")
        why = "evaluation settings changed: " + "; ".join(
            identity.differences(recorded, evaluation))
    if store.checkpoint(run_id) is None:
        return TRAIN, f"{why}, and its checkpoint is missing: training again"
    return EVALUATE, why


def _stale_runs(store: SuiteStore, cells: list[PlannedCell]) -> list[dict]:
    """Runs the plan does not use: other trainings, and planned ones with an old evaluation."""
    planned = {cell.run_id: cell for cell in cells}
    by_name = {(c.cell.dataset, c.cell.model.name, c.cell.seed): c for c in cells}
    rows = []
    for run_id in store.run_ids():
        corruption = store.corruption(run_id)
        if corruption is not None:  # a planned cell says so itself
            if run_id not in planned:
                rows.append({"run_id": run_id, "eval_id": "", "dataset": "", "model": "",
                             "seed": "", "status": "corrupt", "stale": "corrupt",
                             "reason": corruption})
            continue
        config = store.read_config(run_id) or {}
        record = store.read_metrics(run_id) or {}
        row = {"run_id": run_id, "eval_id": record.get("eval_id", ""),
               "dataset": (config.get("dataset") or {}).get("name", ""),
               "model": (config.get("model") or {}).get("name", ""),
               "seed": config.get("seed", ""), "status": record.get("status", FAILED)}
        recorded = config.get("identity") or {}
        if run_id in planned:
            cell = planned[run_id]
            if record.get("eval_id") == cell.eval_id:
                continue
            rows.append({**row, "stale": "evaluation", "reason": "; ".join(
                identity.differences(recorded.get("evaluation"), cell.evaluation))})
            continue
        match = by_name.get((row["dataset"], row["model"], row["seed"]))
        if match is None:
            reason = "no cell of the suite has this dataset, model and seed"
        else:
            reason = "; ".join(identity.differences(recorded.get("training"), match.training))
        rows.append({**row, "stale": "training", "reason": reason})
    return rows
