"""`vae-zoo`: run suites, list what is available, build reports, sync W&B runs.

Exit status: 0 success; 1 some runs failed (the rest are recorded); 2 bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    run.add_argument("--jobs", type=int, default=1,
                     help="cells run at once on this machine, splitting its CPU threads "
                          "(default: 1, in this process)")
    run.add_argument("--executor", choices=["local", "slurm"], default="local",
                     help="local (default) or slurm: submit the cells as a SLURM job array "
                          "through submitit")
    slurm = run.add_argument_group("SLURM (with --executor slurm; defaults from the suite's "
                                   "[slurm] table)")
    slurm.add_argument("--slurm-partition")
    slurm.add_argument("--slurm-time", type=int, metavar="MINUTES")
    slurm.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per job")
    slurm.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per job")
    slurm.add_argument("--slurm-mem-gb", type=int, metavar="GB")
    slurm.add_argument("--slurm-array-parallelism", type=int, metavar="N",
                       help="array tasks running at once")
    slurm.add_argument("--slurm-account")
    slurm.add_argument("--slurm-qos")
    slurm.add_argument("--no-wait", action="store_true",
                       help="return after submitting; `vae-zoo summary SUITE` rebuilds the "
                            "summary later")
    run.set_defaults(handler=command_run)

    summary = commands.add_parser("summary", help="rebuild a suite's summary.csv from its runs")
    summary.add_argument("suite")
    summary.add_argument("--results-dir", type=Path, default=Path("results"))
    summary.add_argument("--wandb", choices=["online", "offline", "disabled"], default=None)
    summary.set_defaults(handler=command_summary)

    listing = commands.add_parser("list", help="list the registered models, datasets and suites")
    listing.set_defaults(handler=command_list)

    report = commands.add_parser("report", help="tables and figures from a suite's results")
    report.add_argument("suite")
    report.add_argument("--results-dir", type=Path, default=Path("results"))
    report.add_argument("--out", type=Path, default=Path("reports"),
                        help="reports/<suite>/ is written here (default: reports)")
    report.add_argument("--wandb", choices=["online", "offline", "disabled"], default=None,
                        help="also log the figures to the suite's W&B summary run (default "
                             "mode as for `run`)")
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
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: expected a positive number of cells at once")
    if args.executor == "slurm" and args.jobs != 1:
        raise UserError("--jobs is for the local executor; with slurm use "
                        "--slurm-array-parallelism")
    overrides = {"partition": args.slurm_partition, "time_min": args.slurm_time,
                 "gpus_per_node": args.slurm_gpus, "cpus_per_task": args.slurm_cpus,
                 "mem_gb": args.slurm_mem_gb, "array_parallelism": args.slurm_array_parallelism,
                 "account": args.slurm_account, "qos": args.slurm_qos}
    slurm = dataclasses.replace(suite.slurm, **{key: value for key, value in overrides.items()
                                                 if value is not None})
    options = RunOptions(results_dir=args.results_dir, device=device, wandb_mode=args.wandb,
                         force=args.force, jobs=args.jobs, executor=args.executor,
                         slurm=slurm, wait=not args.no_wait)
    return run_suite(suite, options)


def command_summary(args: argparse.Namespace) -> int:
    from vae_zoo.harness.runner import finish_suite
    from vae_zoo.harness.store import SuiteStore
    from vae_zoo.harness.suite import load_suite

    suite = load_suite(args.suite)
    store = SuiteStore(args.results_dir / suite.name)
    if not store.runs.is_dir():
        raise UserError(f"no runs of suite '{suite.name}' in {store.root}")
    outcomes = [{"run_id": record["run_id"], "status": record["status"],
                 "reason": record.get("reason")} for _, record in store.records()]
    return finish_suite(suite, store, outcomes, args.wandb)


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
    from vae_zoo.harness.tracking import Tracker

    figures = sorted(path for path in written if path.suffix == ".png")
    Tracker(args.wandb, suite.project, suite.name, results / "wandb").log_suite(
        results / "summary.csv", figures)
    return 0


def command_sync(args: argparse.Namespace) -> int:
    from vae_zoo.harness.suite import load_suite
    from vae_zoo.harness.tracking import sync_offline_runs

    suite = load_suite(args.suite)
    return sync_offline_runs(args.results_dir / suite.name / "wandb")


if __name__ == "__main__":
    sys.exit(main())
