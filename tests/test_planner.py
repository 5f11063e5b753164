"""Planning and train-once / evaluate-many: which cells train, which only evaluate, which are
stale, through `vae-zoo plan`, `run`, `run --dry-run` and `evaluate`."""

import csv
import json

from vae_zoo.cli import main
from vae_zoo.harness.planner import plan_suite
from vae_zoo.harness.store import SuiteStore
from vae_zoo.harness.suite import load_suite


def cli(*args):
    return main([*args, "--device", "cpu"])


def run(suite_path, results, *extra):
    return cli("run", str(suite_path), "--results-dir", str(results), "--wandb", "disabled",
               *extra)


def planned(suite_path, results, capsys):
    """What `vae-zoo plan` prints (after clearing what was printed before)."""
    capsys.readouterr()
    assert cli("plan", str(suite_path), "--results-dir", str(results)) == 0
    return capsys.readouterr().out


def edit(suite_path, old, new):
    text = suite_path.read_text()
    assert old in text
    suite_path.write_text(text.replace(old, new))


def runs(results):
    return sorted(path for path in (results / "tiny" / "runs").iterdir()
                  if not path.name.startswith("."))  # hidden: locks, staging folders


def rows(path):
    with open(path) as stream:
        return list(csv.DictReader(stream))


def test_planning_prints_every_cell_and_writes_nothing(tiny_suite, tmp_path, capsys):
    assert cli("plan", str(tiny_suite), "--results-dir", str(tmp_path / "r")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [["to", "train"]] * 2
    assert lines[-1] == ("suite tiny: 2 cells on cpu; 0 finished, 2 to run (2 to train, "
                         "0 to evaluate), 0 stale")
    assert not (tmp_path / "r").exists()
    assert run(tiny_suite, tmp_path / "r", "--dry-run") == 0
    assert capsys.readouterr().out.strip().splitlines() == lines
    assert not (tmp_path / "r").exists()


def test_a_speed_setting_plans_nothing_and_a_metric_setting_only_evaluates(
        tiny_suite, tmp_path, capsys):
    assert run(tiny_suite, tmp_path) == 0
    before = {run.name: (run / "training.json").read_bytes() for run in runs(tmp_path)}
    weights = {run.name: (run / "checkpoint.safetensors").stat().st_ino for run in runs(tmp_path)}
    old_nll = {run.name: json.loads((run / "metrics.json").read_text())["metrics"]["test_nll"]
               for run in runs(tmp_path)}

    edit(tiny_suite, "[eval]\n", "[eval]\nnll_chunk = 3\nbatch_size = 7\n")
    assert "2 finished, 0 to run" in planned(tiny_suite, tmp_path, capsys)

    edit(tiny_suite, "nll_samples = 20", "nll_samples = 30")
    output = planned(tiny_suite, tmp_path, capsys)
    assert "0 finished, 2 to run (0 to train, 2 to evaluate)" in output
    assert "evaluation settings changed: eval.nll_samples: 20 -> 30" in output

    assert run(tiny_suite, tmp_path) == 0
    output = capsys.readouterr().out
    assert output.count("evaluating the training recorded in") == 2
    assert "trained 2 epochs" not in output
    assert {run.name for run in runs(tmp_path)} == set(before)  # the same trainings
    for run_dir in runs(tmp_path):
        assert (run_dir / "training.json").read_bytes() == before[run_dir.name]
        assert (run_dir / "checkpoint.safetensors").stat().st_ino == weights[run_dir.name]
        record = json.loads((run_dir / "metrics.json").read_text())
        assert record["status"] == "finished" and record["metrics"]["test_nll"] != \
            old_nll[run_dir.name]
    # The replaced evaluations are kept, not overwritten.
    assert len(list((tmp_path / "tiny" / "replaced").iterdir())) == 2
    assert len(rows(tmp_path / "tiny" / "summary.csv")) == 2


def test_a_missing_checkpoint_trains_exactly_that_cell_again(tiny_suite, tmp_path, capsys):
    assert run(tiny_suite, tmp_path) == 0
    first, second = runs(tmp_path)
    (first / "checkpoint.safetensors").unlink()
    # A finished evaluation needs no checkpoint: nothing to do.
    assert "2 finished, 0 to run" in planned(tiny_suite, tmp_path, capsys)
    edit(tiny_suite, "nll_samples = 20", "nll_samples = 25")
    output = planned(tiny_suite, tmp_path, capsys)
    assert "0 finished, 2 to run (1 to train, 1 to evaluate)" in output
    assert f"to train     {first.name}" in output and "its checkpoint is missing" in output
    assert run(tiny_suite, tmp_path) == 0
    output = capsys.readouterr().out
    assert output.count("trained 2 epochs") == 1 and output.count("evaluating the training") == 1


def test_changed_training_settings_leave_stale_runs_out_of_summary_and_report(
        tiny_suite, tmp_path, capsys):
    assert run(tiny_suite, tmp_path) == 0
    old = {run.name for run in runs(tmp_path)}
    edit(tiny_suite, "epochs = 2", "epochs = 3")
    assert run(tiny_suite, tmp_path) == 0
    summary = rows(tmp_path / "tiny" / "summary.csv")
    assert len(summary) == 2 and not {row["run_id"] for row in summary} & old
    stale = rows(tmp_path / "tiny" / "stale.csv")
    assert {row["run_id"] for row in stale} == old
    assert {row["reason"] for row in stale} == {"train.epochs: 2 -> 3"}
    assert {row["stale"] for row in stale} == {"training"}
    capsys.readouterr()
    assert cli("report", str(tiny_suite), "--results-dir", str(tmp_path), "--out",
               str(tmp_path / "reports"), "--wandb", "disabled") == 0
    page = (tmp_path / "reports" / "tiny" / "README.md").read_text()
    assert "2 runs, 2 finished" in page and "2 stale run(s)" in page


def test_evaluate_never_trains_and_can_recompute_one_metric_group(tiny_suite, tmp_path, capsys):
    assert run(tiny_suite, tmp_path) == 0
    records = {run.name: json.loads((run / "metrics.json").read_text())
               for run in runs(tmp_path)}
    edit(tiny_suite, "seeds = [0]", "seeds = [0, 1]")
    capsys.readouterr()
    assert cli("evaluate", str(tiny_suite), "--results-dir", str(tmp_path), "--wandb",
               "disabled", "--metrics", "samples") == 0
    output = capsys.readouterr().out
    assert output.count("not evaluated") == 2 and "trained 2 epochs" not in output
    assert len(runs(tmp_path)) == 2
    for run_dir in runs(tmp_path):
        record = json.loads((run_dir / "metrics.json").read_text())
        assert any(line.strip().startswith("samples:") for line in record["log"])
        assert not any(line.strip().startswith("nll:") for line in record["log"][-4:])
        old = records[run_dir.name]
        for name in ("test_nll", "test_elbo", "active_units", "fid", "precision"):
            assert record["metrics"][name] == old["metrics"][name]  # recomputed or kept
        assert record["recomputed"][0]["groups"] == ["samples"]
        assert record["log"][:len(old["log"])] == old["log"]  # the old log, then the new lines
        assert record["metrics"]["eval_seconds"] > old["metrics"]["eval_seconds"]


def test_unknown_metric_groups_are_bad_input(tiny_suite, tmp_path, capsys):
    assert cli("evaluate", str(tiny_suite), "--results-dir", str(tmp_path), "--metrics",
               "nll,colour") == 2
    assert "unknown metric group(s) colour" in capsys.readouterr().err


def test_without_kept_checkpoints_a_new_evaluation_means_training_again(tiny_suite, tmp_path):
    edit(tiny_suite, "batch_size = 50", "batch_size = 50\nkeep_checkpoints = false")
    assert run(tiny_suite, tmp_path) == 0
    assert not list((tmp_path / "tiny" / "runs").glob("*/checkpoint*"))
    edit(tiny_suite, "nll_samples = 20", "nll_samples = 25")
    store = SuiteStore(tmp_path / "tiny")
    plan = plan_suite(load_suite(str(tiny_suite)), store, "cpu")
    assert [cell.action for cell in plan.cells] == ["to train", "to train"]


def test_a_swept_hyperparameter_is_a_summary_column(tiny_suite, tmp_path):
    edit(tiny_suite, "[model.mlp-vae]\n", "[model.mlp-vae]\nbeta = [1.0, 2.0]\n")
    assert run(tiny_suite, tmp_path) == 0
    summary = rows(tmp_path / "tiny" / "summary.csv")
    swept = {row["model"]: row for row in summary if row["variant_of"] == "mlp-vae"}
    assert set(swept) == {"mlp-vae[beta=1.0]", "mlp-vae[beta=2.0]"}
    assert [float(swept[name]["hp_beta"]) for name in sorted(swept)] == [1.0, 2.0]
    assert {run.name.rsplit("-", 1)[0] for run in runs(tmp_path)} == {
        "circles-mlp-vae_beta=1.0-s0", "circles-mlp-vae_beta=2.0-s0", "circles-iwae-s0"}


def test_a_truncated_checkpoint_is_quarantined_by_evaluate_and_its_cell_trained_again_by_run(
        tiny_suite, tmp_path, capsys):
    """The checksums in metrics.json catch a truncated checkpoint: `evaluate` moves the run,
    as it was, to corrupt/ and does not train it; `run` trains the cell again."""
    assert run(tiny_suite, tmp_path) == 0
    first = runs(tmp_path)[0]
    checkpoint = first / "checkpoint.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # truncated
    edit(tiny_suite, "nll_samples = 20", "nll_samples = 25")
    capsys.readouterr()
    assert cli("evaluate", str(tiny_suite), "--results-dir", str(tmp_path), "--wandb",
               "disabled") == 0
    captured = capsys.readouterr()
    assert (f"moved the corrupt run {first.name} to {tmp_path / 'tiny' / 'corrupt'}/ "
            "(checkpoint.safetensors differs from the checksum in metrics.json") in captured.err
    assert f"not evaluated {first.name}: new cell" in captured.out
    (quarantined,) = (tmp_path / "tiny" / "corrupt").iterdir()
    assert (quarantined / "checkpoint.safetensors").stat().st_size == 100  # kept as it was
    assert json.loads((quarantined / "quarantined.json").read_text())["why"].startswith(
        "checkpoint.safetensors differs")
    assert cli("plan", str(tiny_suite), "--results-dir", str(tmp_path)) == 0
    assert f"quarantined  {first.name}  in {quarantined}" in capsys.readouterr().out
    assert run(tiny_suite, tmp_path) == 0
    assert capsys.readouterr().out.count("trained 2 epochs") == 1
    assert (first / "checkpoint.safetensors").stat().st_size > 100


def test_a_failed_recomputation_leaves_the_finished_evaluation_as_it_was(
        tiny_suite, tmp_path, monkeypatch, capsys):
    assert run(tiny_suite, tmp_path) == 0
    before = {run.name: (run / "metrics.json").read_bytes() for run in runs(tmp_path)}

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("vae_zoo.harness.runner.evaluate", out_of_memory)
    assert cli("evaluate", str(tiny_suite), "--results-dir", str(tmp_path), "--wandb",
               "disabled", "--metrics", "nll") == 1
    assert "evaluation failed: RuntimeError: out of memory" in capsys.readouterr().out
    assert {run.name: (run / "metrics.json").read_bytes() for run in runs(tmp_path)} == before
    assert not (tmp_path / "tiny" / "replaced").exists()


def test_a_reevaluation_records_the_training_settings_the_weights_were_made_with(
        tiny_suite, tmp_path):
    assert run(tiny_suite, tmp_path) == 0
    edit(tiny_suite, "nll_samples = 20", "nll_samples = 25")
    edit(tiny_suite, "batch_size = 50", "batch_size = 50\nkeep_checkpoints = false")
    assert run(tiny_suite, tmp_path) == 0  # evaluated again: keep_checkpoints is not identity
    for run_dir in runs(tmp_path):
        config = json.loads((run_dir / "config.json").read_text())
        assert config["train"]["keep_checkpoints"] is True and config["eval"]["nll_samples"] == 25
        assert (run_dir / "checkpoint.safetensors").is_file()


def test_reading_results_plans_on_the_device_class_they_were_made_on(
        tiny_suite, tmp_path, monkeypatch, capsys):
    assert run(tiny_suite, tmp_path) == 0
    summary = (tmp_path / "tiny" / "summary.csv").read_bytes()
    # As on a GPU machine: commands that only read results keep to the recorded class.
    monkeypatch.setattr("vae_zoo.harness.runner.default_device", lambda: "cuda")
    capsys.readouterr()
    assert main(["plan", str(tiny_suite), "--results-dir", str(tmp_path)]) == 0
    assert "2 cells on cpu; 2 finished, 0 to run" in capsys.readouterr().out
    assert main(["summary", str(tiny_suite), "--results-dir", str(tmp_path), "--wandb",
                 "disabled"]) == 0
    assert (tmp_path / "tiny" / "summary.csv").read_bytes() == summary
    # Asked for explicitly, cuda plans other cells: the cpu runs are then stale.
    assert main(["plan", str(tiny_suite), "--results-dir", str(tmp_path), "--device",
                 "cuda"]) == 0
    assert "2 cells on cuda; 0 finished, 2 to run (2 to train, 0 to evaluate), 2 stale" in \
        capsys.readouterr().out


def test_a_report_with_only_stale_runs_says_so_instead_of_drawing_them(
        tiny_suite, tmp_path, capsys):
    assert run(tiny_suite, tmp_path) == 0
    edit(tiny_suite, "epochs = 2", "epochs = 3")
    capsys.readouterr()
    assert main(["report", str(tiny_suite), "--results-dir", str(tmp_path), "--out",
                 str(tmp_path / "reports"), "--device", "cpu", "--wandb", "disabled"]) == 2
    assert "no run of the suite's current plan" in capsys.readouterr().err
    assert not (tmp_path / "reports" / "tiny" / "README.md").exists()
