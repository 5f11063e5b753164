"""Stacked seeds in the harness (`[train] stack_seeds = true`): the same cells, run ids and
metrics as seeds run one by one; entries that cannot be stacked train alone, saying why; a seed
that diverges fails alone."""

import json

import pytest
import torch

from tests.conftest import TINY_SUITE
from vae_zoo.harness import runner
from vae_zoo.harness.runner import RunOptions, run_suite, stack_units
from vae_zoo.harness.suite import load_suite

pytestmark = pytest.mark.usefixtures("one_thread")

# Measurements of cost, not results, and where the training's log says how it ran.
NOT_RESULTS = {"train_seconds", "train_images_per_s", "eval_seconds", "peak_memory_mb"}
THREE_SEEDS = TINY_SUITE.replace("seeds = [0]", "seeds = [0, 1, 2]")


def write_suite(tmp_path, text: str, stack: bool):
    path = tmp_path / "tiny.toml"
    path.write_text(text.replace("[train]\n", f"[train]\nstack_seeds = {str(stack).lower()}\n"))
    return load_suite(str(path))


def run(suite, results, **options) -> int:
    return run_suite(suite, RunOptions(results_dir=results, device="cpu", wandb_mode="disabled",
                                       **options))


def records(results) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text())
            for path in sorted((results / "tiny" / "runs").glob("*/metrics.json"))}


def test_stacked_seeds_give_the_cells_and_metrics_of_seeds_run_alone(tmp_path, capsys):
    assert run(write_suite(tmp_path, THREE_SEEDS, stack=False), tmp_path / "alone") == 0
    assert run(write_suite(tmp_path, THREE_SEEDS, stack=True), tmp_path / "stacked") == 0
    alone, stacked = records(tmp_path / "alone"), records(tmp_path / "stacked")
    assert len(alone) == 6 and stacked.keys() == alone.keys()  # the same run ids
    for run_id, record in stacked.items():
        assert record["status"] == "finished"
        assert "as one stack of seeds [0, 1, 2]" in record["log"][0], run_id
        expected = {key: value for key, value in alone[run_id]["metrics"].items()
                    if key not in NOT_RESULTS}
        found = {key: value for key, value in record["metrics"].items()
                 if key not in NOT_RESULTS}
        assert found.keys() == expected.keys()
        for key, value in expected.items():
            assert found[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (run_id, key)
        config = json.loads((tmp_path / "stacked" / "tiny" / "runs" / run_id
                             / "config.json").read_text())
        assert config["train"]["stack_seeds"] is True
    history = (tmp_path / "stacked" / "tiny" / "runs" / next(iter(stacked)) / "history.csv")
    assert len(history.read_text().splitlines()) == 1 + 2  # a header and both epochs
    # A rerun finds every cell finished, stacked or not: the setting is not in the identity.
    assert run(write_suite(tmp_path, THREE_SEEDS, stack=False), tmp_path / "stacked") == 0
    assert "6 finished, 0 to run" in capsys.readouterr().out


def test_an_entry_that_cannot_be_stacked_trains_seed_by_seed_saying_why(tmp_path, capsys):
    text = THREE_SEEDS.replace('models = ["mlp-vae", "iwae"]', 'models = ["iwae-dreg"]')
    text = text.replace("[model.iwae]", "[model.iwae-dreg]").replace("seeds = [0, 1, 2]",
                                                                     "seeds = [0, 1]")
    text = text.replace("[model.mlp-vae]\nlatent_dim = 3\nhidden = [32]\n", "")
    assert run(write_suite(tmp_path, text, stack=True), tmp_path) == 0
    printed = capsys.readouterr().out
    assert "seeds [0, 1] trained one by one: estimator DoublyReparameterised" in printed
    found = records(tmp_path)
    assert len(found) == 2
    assert all(record["status"] == "finished" and "stack" not in record["log"][0]
               for record in found.values())


def test_a_seed_that_diverges_in_a_stack_fails_alone(tmp_path, monkeypatch, capsys):
    real_build = runner.build_seeds

    def build_seeds(*args):
        models, objectives, states = real_build(*args)
        with torch.no_grad():  # seed 1's loss overflows at its first step
            for parameter in models[1].parameters():
                parameter.mul_(1e30)
        return models, objectives, states

    monkeypatch.setattr(runner, "build_seeds", build_seeds)
    text = THREE_SEEDS.replace('models = ["mlp-vae", "iwae"]', 'models = ["mlp-vae"]')
    text = text.replace("[model.iwae]\nlatent_dim = 3\nhidden = [32]\n", "")
    assert run(write_suite(tmp_path, text, stack=True), tmp_path) == 1
    assert "FAILED circles-mlp-vae-s1" in capsys.readouterr().out
    found = records(tmp_path)
    by_seed = {record["run_id"].split("-s")[1][0]: record for record in found.values()}
    assert by_seed["1"]["status"] == "failed" and "diverged" in by_seed["1"]["reason"]
    assert by_seed["0"]["status"] == by_seed["2"]["status"] == "finished"
    failed_dir = tmp_path / "tiny" / "runs" / by_seed["1"]["run_id"]
    assert "DivergenceError" in (failed_dir / "error.txt").read_text()


def test_units_group_the_seeds_to_train_of_one_dataset_and_model(tmp_path):
    from vae_zoo.harness.planner import plan_suite
    from vae_zoo.harness.store import SuiteStore

    def units(suite):
        plan = plan_suite(suite, SuiteStore(tmp_path / "results" / suite.name), "cpu")
        tasks = [runner.CellTask(planned, tmp_path, "cpu", "p", "disabled")
                 for planned in plan.cells]
        return [[(task.cell.model.name, task.cell.seed) for task in unit]
                for unit in stack_units(tasks)]

    assert units(write_suite(tmp_path, THREE_SEEDS, stack=True)) == [
        [("mlp-vae", 0), ("mlp-vae", 1), ("mlp-vae", 2)],
        [("iwae", 0), ("iwae", 1), ("iwae", 2)]]
    assert units(write_suite(tmp_path, THREE_SEEDS, stack=False)) == [
        [(model, seed)] for model in ("mlp-vae", "iwae") for seed in (0, 1, 2)]


def test_with_workers_a_stack_goes_whole_to_one_worker(tmp_path):
    text = THREE_SEEDS.replace('models = ["mlp-vae", "iwae"]', 'models = ["mlp-vae"]')
    text = text.replace("[model.iwae]\nlatent_dim = 3\nhidden = [32]\n", "")
    assert run(write_suite(tmp_path, text, stack=True), tmp_path, jobs=2) == 0
    found = records(tmp_path)
    assert len(found) == 3
    assert all("as one stack of seeds [0, 1, 2]" in record["log"][0]
               for record in found.values())
    assert len({record["provenance"]["pid"] for record in found.values()}) == 1
