"""Plant known one-line bugs in a copy of the repository and check that the tests catch each.

Usage: `python tests/planted_bugs.py [NAME ...]` (or `make planted-bugs`); names pick bugs from
`BUGS` (default: all). For each bug, `vae_zoo/`, `tests/`, `benchmarks/` and `pyproject.toml`
are copied into a fresh temporary directory, the bug is applied there as an exact text
replacement (the old text must occur exactly once, so the list fails loudly when the code
moves), and `python -m pytest -q -x -p no:cacheprovider <the bug's test files>` runs in that
copy with the copy first on PYTHONPATH. One line per bug: its name, CAUGHT or SURVIVED, and the
first failing test. The selected test files first run once on an unmodified copy, which must
pass (else a "caught" bug would mean nothing). Exit status: 0 when every bug is caught, 1 when
one survives, 2 when the setup is wrong (a replacement that does not apply, a failing baseline,
or a copy that imports the wrong `vae_zoo`).

Not a pytest module (its name does not start with `test_`): it runs pytest itself, many times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("vae_zoo", "tests", "benchmarks", "pyproject.toml")
TIMEOUT_S = 900  # per pytest run

WIRING = "tests/test_metric_wiring.py"
FACTORS = "tests/test_factors.py"
LIKELIHOOD = "tests/test_likelihood.py"
KNOWN_VALUES = "tests/test_known_values.py"  # end-to-end values of every metric


@dataclass(frozen=True)
class Bug:
    name: str
    path: str  # the source file, relative to the repository root
    old: str  # text that occurs exactly once in it
    new: str
    tests: tuple[str, ...]  # test files that should catch it


BUGS = [
    Bug("iwae-logsumexp", "vae_zoo/metrics/likelihood.py",
        "log_px.append(log_sum - math.log(samples))", "log_px.append(log_sum)",
        (LIKELIHOOD, WIRING, KNOWN_VALUES)),
    Bug("nll-on-validation-split", "vae_zoo/evaluate.py",
        "nll_images = images[:config.nll_images] if config.nll_images else images",
        "nll_images = data.val.images[:config.nll_images] if config.nll_images "
        "else data.val.images",
        (WIRING, KNOWN_VALUES)),
    Bug("active-units-std", "vae_zoo/evaluate.py",
        '"mean_variance": all_means.double().var(0),',
        '"mean_variance": all_means.double().std(0),',
        (WIRING, KNOWN_VALUES)),
    Bug("active-units-threshold-sqrt", "vae_zoo/evaluate.py",
        "active = mean_variance > ACTIVE_UNIT_THRESHOLD",
        "active = mean_variance.sqrt() > ACTIVE_UNIT_THRESHOLD",
        (WIRING, KNOWN_VALUES)),
    Bug("mse-per-image", "vae_zoo/evaluate.py",
        '"mse": squared_error / images.numel(),', '"mse": squared_error / len(images),',
        (WIRING, KNOWN_VALUES)),
    Bug("fid-reference-is-test-set", "vae_zoo/evaluate.py",
        "pixels = torch.cat([data.val.pixels[:draws * count], train_pixels])",
        "pixels = torch.cat([data.test.pixels[:draws * count], train_pixels])",
        (WIRING, KNOWN_VALUES)),
    Bug("samples-not-binarised", "vae_zoo/evaluate.py",
        "return bernoulli(means, generator)", "return means",
        (WIRING, KNOWN_VALUES)),
    Bug("probe-scored-in-sample", "vae_zoo/metrics/factors.py",
        'factor_matrix[test], probe.predict(latent_matrix[test]), multioutput="raw_values"',
        'factor_matrix[train], probe.predict(latent_matrix[train]), multioutput="raw_values"',
        (FACTORS, KNOWN_VALUES)),
    Bug("probe-seed-ignored", "vae_zoo/metrics/factors.py",
        "order = np.random.default_rng(seed).permutation(num_rows)",
        "order = np.random.default_rng(0).permutation(num_rows)",
        (FACTORS, KNOWN_VALUES)),
    Bug("traversal-moves-every-latent", "vae_zoo/evaluate.py",
        "codes[dims, :, dims] = values", "codes[:, :, :] = values[None, :, None]",
        (WIRING, KNOWN_VALUES)),
    # Issue 11's review: estimates checked, splits independent, checkpoints by the objective.
    Bug("binarisation-shared-seed", "vae_zoo/data/batches.py",
        'FIXED_BINARIZATION_SEEDS = {"train": 1234, "val": 1235, "test": 1236}',
        'FIXED_BINARIZATION_SEEDS = {"train": 1234, "val": 1234, "test": 1234}',
        ("tests/test_data.py",)),
    Bug("ess-inverted", "vae_zoo/metrics/likelihood.py",
        "ess.append(torch.exp(2 * log_sum - log_sum_squares))",
        "ess.append(torch.exp(log_sum_squares - 2 * log_sum))",
        (LIKELIHOOD, KNOWN_VALUES)),
    Bug("checkpoint-by-elbo-whatever-select", "vae_zoo/train.py",
        'if config.select == "last" or row[result.criterion] > result.best_value:',
        'if config.select == "last" or row["val_elbo"] > result.best_value:',
        ("tests/test_train.py",)),
    Bug("holm-without-step-down", "vae_zoo/report/statistics.py",
        "factors = len(order) - np.arange(len(order))", "factors = np.ones(len(order))",
        ("tests/test_statistics.py",)),
    Bug("paired-variance-without-seed-effects", "vae_zoo/report/statistics.py",
        "combined = max(ms_seed + ms_image - ms_residual, ms_residual)",
        "combined = max(ms_image, ms_residual)",
        ("tests/test_statistics.py",)),
]


class SetupError(Exception):
    """The check cannot run as written (exit status 2)."""


def selected_tests(bug: Bug) -> list[str]:
    """The bug's test files; a missing one is a setup error (the list is out of date)."""
    missing = [path for path in bug.tests if not (ROOT / path).is_file()]
    if missing:
        raise SetupError(f"{bug.name}: test files missing: {missing}")
    return list(bug.tests)


def make_copy(destination: Path) -> Path:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
        else:
            shutil.copy2(source, destination / name)
    return destination


def planted(text: str, bug: Bug) -> str:
    """`text` with the bug's replacement made; its old text must occur exactly once."""
    occurrences = text.count(bug.old)
    if occurrences != 1:
        raise SetupError(f"{bug.name}: expected the old text once in {bug.path}, found it "
                         f"{occurrences} times: {bug.old!r}")
    return text.replace(bug.old, bug.new)


def plant(copy: Path, bug: Bug) -> None:
    path = copy / bug.path
    path.write_text(planted(path.read_text(), bug))


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_import_location(copy: Path) -> None:
    """The copy's `vae_zoo` must be the one imported there, not the editable install's."""
    found = subprocess.run(
        [sys.executable, "-c", "import vae_zoo; print(vae_zoo.__file__)"], cwd=copy,
        env=environment(copy), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(copy.resolve()):
        raise SetupError(f"the copy in {copy} imports vae_zoo from {found}")


def run_pytest(copy: Path, tests: list[str]) -> tuple[bool, str]:
    """(passed, first failing test id or a note)."""
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        result = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True,
                                text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"(timed out after {TIMEOUT_S} s)"
    if result.returncode == 0:
        return True, ""
    for line in result.stdout.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return False, line.split(" ", 1)[1].split(" - ", 1)[0]
    tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
    return False, f"(pytest exit {result.returncode}: {tail[0]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="bugs to plant (default: all)")
    args = parser.parse_args(argv)
    known = {bug.name: bug for bug in BUGS}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown bugs {unknown}; known: {sorted(known)}")
    bugs = [known[name] for name in args.names] if args.names else BUGS
    try:
        for bug in bugs:  # every replacement applies, before any test runs
            planted((ROOT / bug.path).read_text(), bug)
            selected_tests(bug)
        return check(bugs)
    except SetupError as error:
        print(f"setup: {error}")
        return 2


def check(bugs: list[Bug]) -> int:
    with tempfile.TemporaryDirectory(prefix="planted-bugs-") as scratch:
        baseline = make_copy(Path(scratch) / "baseline")
        check_import_location(baseline)
        every_test = sorted({path for bug in bugs for path in selected_tests(bug)})
        passed, failure = run_pytest(baseline, every_test)
        if not passed:
            print(f"baseline: the selected tests fail without any bug planted: {failure}")
            return 2
        survived = 0
        for bug in bugs:
            copy = make_copy(Path(scratch) / bug.name)
            plant(copy, bug)
            tests = selected_tests(bug)
            passed, failure = run_pytest(copy, tests)
            survived += passed
            verdict = "SURVIVED" if passed else "CAUGHT"
            print(f"{bug.name:30} {verdict:8} {failure or '(' + ', '.join(tests) + ' pass)'}",
                  flush=True)
            shutil.rmtree(copy)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
