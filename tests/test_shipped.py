"""The shipped results match the code: a fresh clone's `make bench` trains nothing and rebuilds
the shipped report byte for byte. A change that alters any cell's identity (the data, a setting,
the code's TRAINING_VERSION / EVALUATION_VERSION) fails here until the results are rerun and
shipped with it."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from vae_zoo.cli import main
from vae_zoo.data.sources import find_idx_files, idx_search_dirs
from vae_zoo.harness.planner import DONE, plan_suite
from vae_zoo.harness.store import SuiteStore
from vae_zoo.harness.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["default", "zoo", "disentanglement-smoke"]

pytestmark = pytest.mark.skipif(
    not any(find_idx_files(folder) for folder in idx_search_dirs("fashion-mnist")),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_cell_of_a_shipped_suite_is_finished_and_nothing_is_stale(name):
    plan = plan_suite(load_suite(name), SuiteStore(REPO / "results" / name), "cpu")
    unfinished = [f"{cell.run_id}: {cell.action} ({cell.reason})" for cell in plan.cells
                  if cell.action != DONE]
    assert not unfinished, (
        "the shipped results do not match the code; rerun `make bench` and ship "
        f"results/{name} and reports/{name}:\n" + "\n".join(unfinished))
    assert plan.stale == [], f"stale runs shipped in results/{name}: {plan.stale}"


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_report_is_rebuilt_byte_for_byte(name, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(REPO / "results" / name, results / name)
    assert main(["report", name, "--results-dir", str(results), "--out", str(tmp_path / "out"),
                 "--device", "cpu", "--wandb", "disabled"]) == 0
    shipped, rebuilt = REPO / "reports" / name, tmp_path / "out" / name
    files = sorted(path.relative_to(shipped) for path in shipped.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(rebuilt) for path in rebuilt.rglob("*")
                           if path.is_file())
    different = [str(path) for path in files
                 if (shipped / path).read_bytes() != (rebuilt / path).read_bytes()]
    assert not different, f"reports/{name} differs from a rebuild in: {different}"
    # Re-planning leaves the shipped summary as it is.
    assert (results / name / "summary.csv").read_bytes() == \
        (REPO / "results" / name / "summary.csv").read_bytes()


FEATURE_LINE = re.compile(r"feature network for sample metrics: test accuracy [0-9.]+ \((\S+)\)")


def feature_nets_used(name: str) -> dict[str, set[float]]:
    """The feature networks the shipped runs of suite `name` were evaluated with, by key, and
    the test accuracies those runs recorded for them."""
    used: dict[str, set[float]] = {}
    for path in sorted((REPO / "results" / name / "runs").glob("*/metrics.json")):
        record = json.loads(path.read_text())
        for line in record.get("log", []):
            found = FEATURE_LINE.search(line)
            if found:
                used.setdefault(found.group(1), set()).add(
                    record["metrics"]["feature_net_accuracy"])
    return used


def test_the_feature_networks_of_the_shipped_results_are_shipped():
    """FID, KID and precision/recall depend on the feature network's weights, which training
    does not reproduce exactly on another CPU or thread count: the shipped suites' networks
    are shipped in results/_cache/features, so new cells on any machine use them."""
    cache = REPO / "results" / "_cache" / "features"
    used: dict[str, set[float]] = {}
    for name in SHIPPED:
        for key, accuracies in feature_nets_used(name).items():
            used.setdefault(key, set()).update(accuracies)
    assert used, "no shipped run names its feature network"
    shipped = {path.stem for path in cache.glob("*.pt")}
    assert shipped == set(used), "ship exactly the feature networks the shipped runs used"
    for key, accuracies in used.items():
        info = json.loads((cache / f"{key}.json").read_text())
        checkpoint = torch.load(cache / f"{key}.pt", weights_only=True)
        assert checkpoint["info"] == info
        # The very network: its test accuracy is the one every run evaluated with it recorded.
        assert accuracies == {info["test_accuracy"]}, key
