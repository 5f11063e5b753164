"""`vae-zoo`: run suites, list what is available, build reports, sync W&B runs.

Exit status: 0 success; 1 some runs failed (the rest are recorded); 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae_zoo.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; unfinished cells rerun next time.",
              file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vae-zoo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train and evaluate every cell of a suite")
    run.add_argument("suite", help="a suite name (see `vae-zoo list`) or the path of a .toml file")
    run.add_argument("--results-dir", type=Path, default=Path("results"),
                     help="where results/<suite>/ is written (default: results)")
    run.add_argument("--device", default=None,
                     help="cpu, cuda or cuda:N (default: cuda when available)")
    run.add_argument("--wandb", choices=["online", "offline", "disabled"], default=None,
                     help="W&B mode (default: $WANDB_MODE, else online when logged in, "
                          "else offline)")
    run.add_argument("--force", action="store_true",
                     help="rerun cells that already finished (the old runs move to replaced/)")
    run.set_defaults(handler=command_run)

    listing = commands.add_parser("list", help="list the registered models, datasets and suites")
    listing.set_defaults(handler=command_list)

    report = commands.add_parser("report", help="tables and figures from a suite's results")
    report.add_argument("suite")
    report.add_argument("--results-dir", type=Path, default=Path("results"))
    report.add_argument("--out", type=Path, default=Path("reports"),
                        help="reports/<suite>/ is written here (default: reports)")
    report.set_defaults(handler=command_report)

    sync = commands.add_parser("sync", help="upload a suite's offline W&B runs (wandb sync)")
    sync.add_argument("suite")
    sync.add_argument("--results-dir", type=Path, default=Path("results"))
    sync.set_defaults(handler=command_sync)
    return parser


def command_run(args: argparse.Namespace) -> int:
    import torch

    from vae_zoo.harness.runner import RunOptions, default_device, run_suite
    from vae_zoo.harness.suite import load_suite

    suite = load_suite(args.suite)
    device = args.device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    options = RunOptions(results_dir=args.results_dir, device=device, wandb_mode=args.wandb,
                         force=args.force)
    return run_suite(suite, options)


def command_list(args: argparse.Namespace) -> int:
    from vae_zoo.data import DATASETS
    from vae_zoo.harness.suite import available_suites, find_suite_file
    from vae_zoo.zoo import ZOO

    print("models:")
    for entry in ZOO.values():
        print(f"  {entry.name:<14} {entry.description}")
    print("datasets:")
    for spec in DATASETS.values():
        print(f"  {spec.name:<14} {spec.description}")
    print("suites:")
    for name in available_suites():
        print(f"  {name:<14} {find_suite_file(name)}")
    return 0


def command_report(args: argparse.Namespace) -> int:
    from vae_zoo.harness.suite import load_suite
    from vae_zoo.report import build_report

    suite = load_suite(args.suite)
    results = args.results_dir / suite.name
    if not (results / "runs").is_dir():
        raise UserError(f"no results for suite '{suite.name}' in {results}; "
                        f"run `vae-zoo run {args.suite}` first")
    written = build_report(results, args.out / suite.name, references=suite.references)
    print(f"report of {suite.name}: {len(written)} files in {args.out / suite.name}")
    return 0


def command_sync(args: argparse.Namespace) -> int:
    from vae_zoo.harness.suite import load_suite
    from vae_zoo.harness.tracking import sync_offline_runs

    suite = load_suite(args.suite)
    return sync_offline_runs(args.results_dir / suite.name / "wandb")


if __name__ == "__main__":
    sys.exit(main())
