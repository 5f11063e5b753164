"""Export and import: a suite's runs leave as a verifiable folder (a model repository) and come
back byte for byte, or not at all."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from vae_zoo.cli import main

SUITE = "tiny"
pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args) -> int:
    return main([str(arg) for arg in args])


def export(suite: Path, results: Path, out: Path) -> Path:
    assert cli("export", suite, "--out", out, "--results-dir", results, "--device", "cpu") == 0
    return out / SUITE


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path, with its bytes."""
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_imported_export_reports_byte_identically_to_the_original(tiny_results, tmp_path,
                                                                      capsys):
    suite, original = tiny_results
    exported = export(suite, original, tmp_path / "export")
    imported = tmp_path / "b" / "results"
    assert cli("import", exported, "--results-dir", imported) == 0
    out = capsys.readouterr().out
    assert "imported 2 runs of tiny" in out
    assert f"vae-zoo report {exported / 'tiny.toml'}" in out

    for run_dir in (original / SUITE / "runs").iterdir():
        if not run_dir.name.startswith("."):
            assert tree(imported / SUITE / "runs" / run_dir.name) == tree(run_dir)
    for results, report in ((original, tmp_path / "report-a"), (imported, tmp_path / "report-b")):
        assert cli("report", exported / "tiny.toml", "--results-dir", results, "--out", report,
                   "--device", "cpu", "--wandb", "disabled") == 0
    report_a, report_b = tree(tmp_path / "report-a" / SUITE), tree(tmp_path / "report-b" / SUITE)
    assert any(name.endswith(".png") for name in report_a)
    assert report_a.keys() == report_b.keys()
    for name in report_a:
        assert report_a[name] == report_b[name], name


def test_the_export_is_a_model_repository_with_a_card_and_a_manifest(tiny_results, tmp_path):
    suite, results = tiny_results
    exported = export(suite, results, tmp_path / "export")
    manifest = json.loads((exported / "manifest.json").read_text())
    card = (exported / "README.md").read_text()
    assert manifest["suite"] == SUITE and manifest["format_version"] == 1
    assert (exported / "tiny.toml").read_text() == suite.read_text()
    run_ids = sorted(path.name for path in (results / SUITE / "runs").iterdir()
                     if not path.name.startswith("."))
    assert sorted(run["run_id"] for run in manifest["runs"]) == run_ids
    for run in manifest["runs"]:
        assert run["weights"] and f"runs/{run['run_id']}" in card
        assert run["run_id"].endswith("-" + run["train_id"])
        stored = json.loads((results / SUITE / "runs" / run["run_id"] / "metrics.json").read_text())
        assert run["metrics"] == stored["metrics"] and run["config"]["run_id"] == run["run_id"]
        assert {"config.json", "training.json", "metrics.json", "history.csv", "arrays.npz",
                "checkpoint.safetensors"} <= set(run["files"])
        for name, entry in run["files"].items():
            data = (exported / "runs" / run["run_id"] / name).read_bytes()
            assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert "vae_zoo.load(" in card and "vae-zoo import" in card and "test ELBO" in card


@pytest.mark.parametrize("name", ["metrics.json", "checkpoint.safetensors"])
def test_a_tampered_file_stops_the_import_naming_it_and_writes_nothing(tiny_results, tmp_path,
                                                                        capsys, name):
    suite, results = tiny_results
    exported = export(suite, results, tmp_path / "export")
    run_dir = sorted((exported / "runs").iterdir())[0]
    flip_one_byte(run_dir / name)
    capsys.readouterr()
    assert cli("import", exported, "--results-dir", tmp_path / "imported") == 2
    err = capsys.readouterr().err
    assert str(run_dir / name) in err and "SHA-256 differs" in err
    assert not (tmp_path / "imported").exists()


def test_a_missing_or_unlisted_file_stops_the_import(tiny_results, tmp_path, capsys):
    suite, results = tiny_results
    exported = export(suite, results, tmp_path / "export")
    run_dir = sorted((exported / "runs").iterdir())[0]
    (run_dir / "history.csv").rename(run_dir / "notes.csv")
    capsys.readouterr()
    assert cli("import", tmp_path / "export", "--results-dir", tmp_path / "imported") == 2
    err = capsys.readouterr().err
    assert f"{run_dir / 'history.csv'}: missing" in err
    assert f"{run_dir / 'notes.csv'}: not listed" in err
    assert not (tmp_path / "imported").exists()


def test_importing_twice_changes_nothing(tiny_results, tmp_path, capsys):
    suite, results = tiny_results
    exported = export(suite, results, tmp_path / "export")
    imported = tmp_path / "imported"
    assert cli("import", exported, "--results-dir", imported) == 0
    before = {path: path.stat().st_mtime_ns for path in imported.rglob("*")}
    capsys.readouterr()
    assert cli("import", exported, "--results-dir", imported) == 0
    assert "imported 0 runs of tiny" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in imported.rglob("*")} == before


def test_an_existing_different_run_is_never_overwritten(tiny_results, tmp_path, capsys):
    suite, results = tiny_results
    exported = export(suite, results, tmp_path / "export")
    imported = tmp_path / "imported"
    run_id = sorted(path.name for path in (exported / "runs").iterdir())[0]
    existing = imported / SUITE / "runs" / run_id
    existing.mkdir(parents=True)
    (existing / "metrics.json").write_text("{}\n")
    capsys.readouterr()
    assert cli("import", exported, "--results-dir", imported) == 2
    assert f"{existing} exists with other files" in capsys.readouterr().err
    assert tree(existing) == {"metrics.json": b"{}\n"}
    assert [path.name for path in (imported / SUITE / "runs").iterdir()] == [run_id]


def test_exporting_into_a_non_empty_folder_is_refused(tiny_results, tmp_path, capsys):
    suite, results = tiny_results
    (tmp_path / "export" / SUITE).mkdir(parents=True)
    (tmp_path / "export" / SUITE / "notes.txt").write_text("mine")
    assert cli("export", suite, "--out", tmp_path / "export", "--results-dir", results,
               "--device", "cpu") == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert tree(tmp_path / "export") == {f"{SUITE}/notes.txt": b"mine"}


def test_runs_without_weights_are_exported_without_them_and_a_warning(tiny_results, tmp_path,
                                                                      capsys):
    suite, results = tiny_results
    shipped = tmp_path / "shipped"
    shutil.copytree(results / SUITE, shipped / SUITE)
    run_id = sorted(path.name for path in (shipped / SUITE / "runs").iterdir()
                    if not path.name.startswith("."))[0]
    for checkpoint in (shipped / SUITE / "runs" / run_id).glob("checkpoint*.safetensors"):
        checkpoint.unlink()
    capsys.readouterr()
    exported = export(suite, shipped, tmp_path / "export")
    assert "warning: 1 of 2 runs of tiny have no checkpoint" in capsys.readouterr().err
    manifest = json.loads((exported / "manifest.json").read_text())
    weights = {run["run_id"]: run["weights"] for run in manifest["runs"]}
    assert weights[run_id] is False and sum(weights.values()) == 1
    assert not list((exported / "runs" / run_id).glob("*.safetensors"))
    assert "1 of 2 runs have no weights" in (exported / "README.md").read_text()
    assert cli("import", exported, "--results-dir", tmp_path / "imported") == 0


def test_exporting_a_suite_with_no_finished_cell_is_refused(tiny_results, tmp_path, capsys):
    suite, _ = tiny_results
    assert cli("export", suite, "--out", tmp_path / "export", "--results-dir", tmp_path / "none",
               "--device", "cpu") == 2
    assert "no finished cell" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()


def test_exporting_into_a_file_is_bad_input(tiny_results, tmp_path, capsys):
    suite, results = tiny_results
    (tmp_path / "a-file").write_text("not a folder")
    assert cli("export", suite, "--out", tmp_path / "a-file", "--results-dir", results,
               "--device", "cpu") == 2
    assert "cannot export into" in capsys.readouterr().err


def test_a_run_whose_identities_do_not_hash_to_its_ids_is_refused(tiny_results, tmp_path,
                                                                   capsys):
    suite, results = tiny_results
    exported = export(suite, results, tmp_path / "export")
    run_dir = sorted((exported / "runs").iterdir())[0]
    config = json.loads((run_dir / "config.json").read_text())
    config["identity"]["training"]["seed"] += 1  # claims another training than it names
    data = (json.dumps(config, indent=2) + "\n").encode()
    (run_dir / "config.json").write_bytes(data)
    manifest = json.loads((exported / "manifest.json").read_text())
    for run in manifest["runs"]:  # a consistent manifest, so only the identity check can tell
        if run["run_id"] == run_dir.name:
            run["files"]["config.json"] = {"sha256": hashlib.sha256(data).hexdigest(),
                                           "size": len(data)}
    (exported / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    capsys.readouterr()
    assert cli("import", exported, "--results-dir", tmp_path / "imported") == 2
    assert "do not hash to its ids" in capsys.readouterr().err
    assert not (tmp_path / "imported").exists()
