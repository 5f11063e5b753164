"""W&B tracking: runs arrive organised, and W&B can never stop or stall a benchmark.

Runs are read back from their offline record logs with `wandb leet inspect` (see `read_run`).
"""

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import wandb
from wandb.sdk.wandb_run import Run
from wandb_reader import read_run

from vae_zoo.errors import UserError
from vae_zoo.harness import tracking
from vae_zoo.harness.tracking import (
    Tracker,
    offline_run_dirs,
    resolve_mode,
    sync_offline_runs,
    wandb_run_id,
)

FAKE_KEY = "x" * 40  # well-formed, so W&B gets as far as the network
CLOSED_PORT_URL = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused


@pytest.fixture(autouse=True)
def no_wandb_login(monkeypatch, tmp_path):
    """Every test starts logged out, with no mode chosen, whatever the machine has configured."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(tracking, "_process", tracking._ProcessState())  # as in a new process


@pytest.fixture
def fresh_wandb():
    """W&B's process-wide setup reads the environment once: reset it around tests that change it."""
    wandb.teardown()
    yield
    wandb.teardown()


def cell_config(seed: int) -> dict:
    return {"run_id": f"circles-mlp-vae-s{seed}-1a2b3c4d", "suite": "smoke",
            "dataset": {"name": "circles", "options": {"count": 200, "side": 8}},
            "model": {"name": "mlp-vae", "hyperparameters": {"latent_dim": 3, "beta": 1.0}},
            "seed": seed, "train": {"epochs": 2, "learning_rate": 0.001}}


def cell_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    images = {name: rng.random((16, 1, 8, 8), dtype=np.float32)
              for name in ("samples", "originals", "reconstructions")}
    return images | {"kl_per_dim": np.array([2.5, 0.5, 0.0], dtype=np.float32)}


def history_rows(seed: int) -> list[dict]:
    return [{"train_loss": 10.0 / epoch + seed, "train_kl": 1.5, "val_elbo": -20.0 + epoch,
             "val_recon": 18.0, "val_kl": 2.0} for epoch in (1, 2)]


def run_cell(tracker: Tracker, seed: int, rng: np.random.Generator) -> dict:
    config = cell_config(seed)
    run = tracker.start_run(config["run_id"], "circles", "mlp-vae", seed, config)
    for epoch, row in enumerate(history_rows(seed), start=1):
        run.log_epoch(epoch, row)
    metrics = {"test_elbo": -17.5 - seed, "test_nll": 16.25, "active_units": 2.0}
    run.finish("finished", metrics, cell_arrays(rng))
    run.finish("finished", metrics, cell_arrays(rng))  # a second call is harmless
    return {"config": config, "metrics": metrics, "wandb_id": run.wandb_id}


def warnings_in(captured: str) -> list[str]:
    return [line for line in captured.splitlines() if line.startswith("warning: W&B")]


def test_an_offline_suite_arrives_organised_with_everything_logged(tmp_path, capsys):
    environment = dict(os.environ)
    tracker = Tracker("offline", "vae-zoo-smoke", "smoke", tmp_path / "wandb")
    rng = np.random.default_rng(0)
    cells = [run_cell(tracker, seed, rng) for seed in (0, 1)]
    summary_csv = tmp_path / "summary.csv"
    summary_csv.write_text("run_id,suite,dataset,model,seed,status,reason,test_elbo\n"
                           "a,smoke,circles,mlp-vae,0,finished,,-17.5\n"
                           "b,smoke,circles,mlp-vae,1,failed,diverged,\n")
    tracker.log_suite(summary_csv, figures=[])

    run_dirs = offline_run_dirs(tmp_path / "wandb")
    assert len(run_dirs) == 3
    runs = {run["id"]: run for run in map(read_run, run_dirs)}
    for seed, cell in enumerate(cells):
        run = runs[cell["wandb_id"]]
        assert run["name"] == f"circles/mlp-vae/s{seed}"
        assert (run["group"], run["job_type"]) == ("smoke", "mlp-vae")
        assert run["tags"] == ["dataset:circles", "model:mlp-vae", f"seed:{seed}"]
        assert run["config"] == cell["config"]
        assert [row["epoch"] for row in run["epochs"]] == [1, 2]
        assert [{name: row[name] for name in history_rows(seed)[0]} for row in run["epochs"]] \
            == history_rows(seed)
        assert {name: run["summary"][name] for name in cell["metrics"]} == cell["metrics"]
        assert (run["summary"]["status"], run["exit_code"]) == ("finished", 0)
        # 16 images of 8x8 px, 8 to a row with 2 px padding; each original beside its reconstruction
        assert (run["summary"]["samples"]["width"], run["summary"]["samples"]["height"]) == (82, 22)
        assert run["summary"]["reconstructions"]["width"] == 16 * 10 + 2
        kl_table = run["files"] / run["summary"]["kl_per_dim_table"]["path"]
        assert json.loads(kl_table.read_text())["data"] == [[0, 2.5], [1, 0.5], [2, 0.0]]

    suite_run = runs[wandb_run_id("suite:smoke")]
    assert (suite_run["name"], suite_run["group"], suite_run["job_type"]) \
        == ("smoke/summary", "smoke", "summary")
    results = json.loads((suite_run["files"] / suite_run["summary"]["results"]["path"]).read_text())
    assert results["columns"][:7] == ["run_id", "suite", "dataset", "model", "seed", "status",
                                      "reason"]
    assert results["data"][1][5:] == ["failed", "diverged", None]
    assert capsys.readouterr().err == ""
    ours = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_SILENT")  # set per call only
    assert [os.environ.get(name) for name in ours] == [environment.get(name) for name in ours]


def test_a_failed_cell_is_finished_with_exit_code_1_and_its_status(tmp_path):
    tracker = Tracker("offline", "vae-zoo-smoke", "smoke", tmp_path / "wandb")
    with pytest.raises(FloatingPointError), \
            tracker.start_run("circles-mlp-vae-s0-x", "circles", "mlp-vae", 0, {}) as run:
        run.log_epoch(1, {"train_loss": float("nan")})
        raise FloatingPointError("loss is nan at epoch 1")
    run.finish("finished", {}, {})  # already finished: ignored

    (failed,) = map(read_run, offline_run_dirs(tmp_path / "wandb"))
    assert (failed["summary"]["status"], failed["exit_code"]) == ("failed", 1)
    assert failed["summary"]["reason"] == "FloatingPointError: loss is nan at epoch 1"


def test_the_wandb_run_id_is_derived_from_our_run_id(tmp_path):
    assert wandb_run_id("circles-mlp-vae-s0-1a2b3c4d") == "circles-mlp-vae-s0-1a2b3c4d"
    for awkward in ("suite:smoke", "a/b c", "x" * 100):
        derived = wandb_run_id(awkward)
        assert derived == wandb_run_id(awkward) and len(derived) <= 64
        assert re.fullmatch(r"[A-Za-z0-9_-]+", derived)
    assert wandb_run_id("a/b") != wandb_run_id("a:b")

    # Running the same cell again writes to the same W&B run, so syncing never duplicates it.
    tracker = Tracker("offline", "vae-zoo-smoke", "smoke", tmp_path / "wandb")
    ids = set()
    for _attempt in range(2):
        run = tracker.start_run("circles/mlp-vae s0", "circles", "mlp-vae", 0, {})
        run.finish("finished", {}, {})
        ids.add(run.wandb_id)
    assert len(ids) == 1
    logs = [path.name for folder in offline_run_dirs(tmp_path / "wandb") for path in
            folder.glob("*.wandb")]
    assert logs == [f"run-{ids.pop()}.wandb"] * 2


def test_disabled_tracking_accepts_every_call_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(wandb, "init", lambda *args, **kwargs: pytest.fail("W&B was started"))
    tracker = Tracker("disabled", "vae-zoo-smoke", "smoke", tmp_path / "wandb")
    run = tracker.start_run("circles-mlp-vae-s0-x", "circles", "mlp-vae", 0, {"seed": 0})
    run.log_epoch(1, {"train_loss": 1.0})
    run.finish("finished", {"test_elbo": -1.0}, cell_arrays(np.random.default_rng(0)))
    tracker.log_suite(tmp_path / "missing.csv", [])
    assert not run.active
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr() == ("", "")


def test_an_unreachable_server_costs_one_warning_and_the_suite_goes_offline(
        tmp_path, monkeypatch, capsys, fresh_wandb):
    monkeypatch.setenv("WANDB_BASE_URL", CLOSED_PORT_URL)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)

    def new_tracker() -> Tracker:  # as the runner does, one a cell
        return Tracker(None, "vae-zoo-smoke", "smoke", tmp_path / "wandb", init_timeout_s=2)

    assert new_tracker().mode == "online"
    rng = np.random.default_rng(0)
    began = time.monotonic()
    for seed in (0, 1):
        run_cell(new_tracker(), seed, rng)
    new_tracker().log_suite(tmp_path / "missing.csv", [])  # a local problem: its own warning
    assert time.monotonic() - began < 20

    assert new_tracker().mode == "offline"
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 2
    assert lines[0].startswith("warning: W&B init failed for circles/mlp-vae/s0: CommError:")
    assert "continuing offline" in lines[0] and "make wandb-sync" in lines[0]
    assert lines[1].startswith("warning: W&B log failed for smoke/summary: FileNotFoundError")
    assert len(offline_run_dirs(tmp_path / "wandb")) == 3  # both cells and the summary, on disk


def test_any_failing_wandb_call_is_one_warning_per_kind_and_never_raises(
        tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise RuntimeError("server said 500")

    rng = np.random.default_rng(0)
    with monkeypatch.context() as patched:
        patched.setattr(wandb, "init", refuse)
        tracker = Tracker("offline", "vae-zoo-smoke", "smoke", tmp_path / "a")
        for seed in (0, 1):
            run_cell(tracker, seed, rng)
        tracker.log_suite(tmp_path / "summary.csv", [])
    assert warnings_in(capsys.readouterr().err) == [
        "warning: W&B init failed for circles/mlp-vae/s0: RuntimeError: server said 500; "
        "this run is not tracked; local results are unaffected"]

    with monkeypatch.context() as patched:
        patched.setattr(Run, "log", refuse)
        tracker = Tracker("offline", "vae-zoo-smoke", "smoke", tmp_path / "b")
        for seed in (0, 1):
            run_cell(tracker, seed, rng)
    (line,) = warnings_in(capsys.readouterr().err)
    assert line.startswith("warning: W&B log failed for circles/mlp-vae/s0: RuntimeError:")

    tracker = Tracker("offline", "vae-zoo-smoke", "smoke", tmp_path / "c")
    run = tracker.start_run("circles-mlp-vae-s0-x", "circles", "mlp-vae", 0, {})
    run.finish("finished", {"test_elbo": -1.0}, {"samples": np.zeros(3)})  # not (n, C, H, W)
    (line,) = warnings_in(capsys.readouterr().err)
    assert line.startswith("warning: W&B media failed for circles/mlp-vae/s0:")
    assert line.endswith("the run is finished without its images")
    assert not run.active


def test_the_mode_is_explicit_then_wandb_mode_then_online_if_logged_in(tmp_path, monkeypatch):
    assert resolve_mode(None) == "offline"
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_mode(None) == "online"
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(None) == "disabled"
    assert resolve_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode(None) == "offline"
    with pytest.raises(UserError, match="--wandb='onlin'"):
        resolve_mode("onlin")


@pytest.fixture
def offline_run(tmp_path) -> Path:
    tracker = Tracker("offline", "vae-zoo-smoke", "smoke", tmp_path / "wandb")
    run = tracker.start_run("circles-mlp-vae-s0-x", "circles", "mlp-vae", 0, {})
    run.finish("finished", {}, {})
    return tmp_path / "wandb"


def test_sync_without_an_api_key_fails_at_once_with_a_clear_message(offline_run, capsys):
    began = time.monotonic()
    assert sync_offline_runs(offline_run) == 1
    assert time.monotonic() - began < 5
    assert "needs an API key" in capsys.readouterr().err


def test_sync_to_an_unreachable_server_fails_within_seconds_saying_the_runs_stay(
        offline_run, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_BASE_URL", CLOSED_PORT_URL)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    began = time.monotonic()
    assert sync_offline_runs(offline_run) == 1
    assert time.monotonic() - began < 15
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: the W&B server 127.0.0.1:9 cannot be reached (")
    assert f"stay in {offline_run}" in line


def test_sync_never_hangs_on_a_server_that_does_not_answer(offline_run, monkeypatch, capsys):
    """A server that accepts connections but `wandb sync` cannot finish with (here: one that
    refuses them, with the reachability check passed) is given up after `timeout_s`."""
    monkeypatch.setenv("WANDB_BASE_URL", CLOSED_PORT_URL)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setattr(tracking, "server_problem", lambda: None)
    began = time.monotonic()
    assert sync_offline_runs(offline_run, timeout_s=3) != 0
    assert time.monotonic() - began < 10
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: W&B sync gave up after 3 s")


def test_sync_with_nothing_to_upload_succeeds(tmp_path):
    assert sync_offline_runs(tmp_path / "wandb") == 0


def without_empty_tables(value):
    if isinstance(value, dict):
        return {key: without_empty_tables(item) for key, item in value.items()
                if not (isinstance(item, dict) and not item)}
    return value


def test_the_smoke_suite_logs_every_cell_and_a_summary_run_as_in_its_run_files(smoke_results):
    import csv

    status, results = smoke_results
    assert status == 0
    logged = {}
    for run_dir in offline_run_dirs(results / "wandb"):
        run = read_run(run_dir)
        logged[run["id"]] = run
    run_dirs = sorted(p for p in (results / "runs").iterdir() if not p.name.startswith("."))
    assert len(logged) == len(run_dirs) + 1  # one run per cell, and the suite's summary run
    for run_dir in run_dirs:
        config = json.loads((run_dir / "config.json").read_text())
        record = json.loads((run_dir / "metrics.json").read_text())
        run = logged[wandb_run_id(f"smoke-{run_dir.name}")]
        assert run["group"] == "smoke" and run["job_type"] == config["model"]["name"]
        assert run["name"] == f"{config['dataset']['name']}/{config['model']['name']}/" \
                              f"s{config['seed']}"
        assert run["config"] == without_empty_tables(config)  # W&B drops empty ones
        for name, value in record["metrics"].items():
            assert run["summary"][name] == pytest.approx(value, rel=1e-12), name
        with open(run_dir / "history.csv") as stream:
            history = list(csv.DictReader(stream))
        assert [row["val_elbo"] for row in run["epochs"]] == \
            pytest.approx([float(row["val_elbo"]) for row in history], rel=1e-6)
    summary_run = logged[wandb_run_id("suite:smoke")]
    assert summary_run["job_type"] == "summary" and summary_run["group"] == "smoke"


def test_a_suite_completes_with_full_local_results_when_wandb_fails(
        tiny_suite, tmp_path, fresh_wandb, monkeypatch, capsys):
    from vae_zoo.harness.runner import RunOptions, run_suite
    from vae_zoo.harness.suite import load_suite

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", CLOSED_PORT_URL)
    status = run_suite(load_suite(str(tiny_suite)),
                       RunOptions(results_dir=tmp_path, device="cpu", wandb_mode="online"))
    assert status == 0
    records = [json.loads(path.read_text())
               for path in (tmp_path / "tiny" / "runs").glob("*/metrics.json")]
    assert len(records) == 2 and all(r["status"] == "finished" for r in records)
    assert all("test_nll" in r["metrics"] for r in records)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "W&B" in line]
    assert warnings and all(line.startswith("warning: W&B") for line in warnings)
