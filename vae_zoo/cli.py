"""`vae-zoo`: plan, run and evaluate suites, build reports, export and import trained runs.

Exit status: 0 success; 1 some runs failed (the rest are recorded); 2 bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from pathlib import Path

from vae_zoo.errors import UserError, storage_error


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if in_main_thread else None
    try:
        return args.handler(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # storage the commands could not use: a user's problem to fix
        print(f"error: {storage_error(error.filename or '?', error, doing='use')}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; unfinished cells rerun next time.",
              file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def interrupt(signum, frame) -> None:
    """SIGTERM (e.g. from `kill` or a scheduler) stops a command as Ctrl-C does."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough while it stops
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vae-zoo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train and evaluate every cell of a suite")
    add_execution_arguments(run)
    run.add_argument("--force", action="store_true",
                     help="rerun cells that already finished (the old runs move to replaced/)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (as `vae-zoo plan`) and run nothing")
    run.set_defaults(handler=command_run)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate finished trainings with the suite's evaluation settings")
    add_execution_arguments(evaluate)
    evaluate.add_argument(
        "--metrics", default=None, metavar="GROUP[,GROUP...]",
        help="recompute only these metric groups of cells already evaluated with the current "
             "settings (cells without a current evaluation get every group); groups: "
             "elbo, nll, iwae, ais, bdmc, latents, factors, disentanglement, samples, images")
    evaluate.set_defaults(handler=command_evaluate)

    plan = commands.add_parser("plan", help="every cell of a suite with its status, and the "
                                            "stale runs; runs nothing")
    plan.add_argument("suite")
    add_results_arguments(plan)
    plan.set_defaults(handler=command_plan)

    summary = commands.add_parser("summary", help="rebuild a suite's summary.csv (its current "
                                                  "cells) and stale.csv from its runs")
    summary.add_argument("suite")
    add_results_arguments(summary)
    summary.add_argument("--wandb", choices=["online", "offline", "disabled"], default=None)
    summary.set_defaults(handler=command_summary)

    listing = commands.add_parser("list", help="list the registered models, datasets and suites")
    listing.set_defaults(handler=command_list)

    report = commands.add_parser("report", help="tables and figures from a suite's results")
    report.add_argument("suite")
    add_results_arguments(report)
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

    export = commands.add_parser(
        "export", help="copy a suite's finished runs, their weights and a model card into "
                       "DIR/<suite>/ (uploadable as a model repository)")
    export.add_argument("suite")
    export.add_argument("--out", type=Path, required=True,
                        help="DIR/<suite>/ is written here; it must not exist or be empty")
    add_results_arguments(export)
    export.set_defaults(handler=command_export)

    importing = commands.add_parser(
        "import", help="check an exported suite against its manifest and add its runs to a "
                       "results directory")
    importing.add_argument("folder", type=Path,
                           help="an exported DIR/<suite>, or a DIR holding one exported suite")
    importing.add_argument("--results-dir", type=Path, default=Path("results"),
                           help="the runs go to results/<suite>/runs/ (default: results)")
    importing.set_defaults(handler=command_import)
    return parser


def add_results_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where results/<suite>/ is (default: results)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N (default: cuda when available); the device "
                             "class is part of a cell's identity")


def add_execution_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("suite", help="a suite name (see `vae-zoo list`) or the path of a .toml file")
    add_results_arguments(run)
    run.add_argument("--wandb", choices=["online", "offline", "disabled"], default=None,
                     help="W&B mode (default: $WANDB_MODE, else online when logged in, "
                          "else offline)")
    run.add_argument("--jobs", type=int, default=1,
                     help="cells at once on this machine, splitting its CPU threads "
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


def chosen_device(args: argparse.Namespace, *, reads: Path | None = None) -> str:
    """--device, checked; by default cuda when available, else cpu.

    Commands that only read a suite's results (`reads` = its folder: plan, summary, report,
    export) accept cuda without a GPU, and by default plan on the device class its summary.csv
    records, so that CPU results read on a GPU machine (or GPU results on a CPU one) are not
    taken for stale.
    """
    import torch

    from vae_zoo.harness.runner import default_device
    from vae_zoo.harness.store import SuiteStore

    recorded = SuiteStore(reads).summary_device_class() if reads is not None else None
    device = args.device or recorded or default_device()
    if reads is None and device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    return device


def run_options(args: argparse.Namespace, suite, *, force: bool = False):
    from vae_zoo.harness.runner import RunOptions

    device = chosen_device(args)
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
    return RunOptions(results_dir=args.results_dir, device=device, wandb_mode=args.wandb,
                      force=force, jobs=args.jobs, executor=args.executor, slurm=slurm,
                      wait=not args.no_wait)


def command_run(args: argparse.Namespace) -> int:
    from vae_zoo.harness.runner import run_suite
    from vae_zoo.harness.suite import load_suite

    suite = load_suite(args.suite)
    options = run_options(args, suite, force=args.force)
    if args.dry_run:
        return print_plan(suite, options.results_dir, options.device, force=args.force)
    return run_suite(suite, options)


def command_evaluate(args: argparse.Namespace) -> int:
    from vae_zoo.evaluate import METRIC_GROUPS
    from vae_zoo.harness.runner import run_suite
    from vae_zoo.harness.suite import load_suite

    suite = load_suite(args.suite)
    groups: tuple[str, ...] = ()
    if args.metrics is not None:
        groups = tuple(name.strip() for name in args.metrics.split(",") if name.strip())
        unknown = [name for name in groups if name not in METRIC_GROUPS]
        if unknown or not groups:
            raise UserError(f"--metrics {args.metrics!r}: unknown metric group(s) "
                            f"{', '.join(unknown) or '(none given)'}; choose from "
                            f"{', '.join(METRIC_GROUPS)}")
    return run_suite(suite, run_options(args, suite), evaluate_only=True, metric_groups=groups)


def command_plan(args: argparse.Namespace) -> int:
    from vae_zoo.harness.suite import load_suite

    suite = load_suite(args.suite)
    device = chosen_device(args, reads=args.results_dir / suite.name)
    return print_plan(suite, args.results_dir, device)


def print_plan(suite, results_dir: Path, device: str, *, force: bool = False) -> int:
    """Every cell with its status and reason, the stale runs, and the counts (last line)."""
    from vae_zoo.harness.planner import plan_suite
    from vae_zoo.harness.store import SuiteStore

    store = SuiteStore(Path(results_dir) / suite.name)
    plan = plan_suite(suite, store, device, force=force)
    for planned in plan.cells:
        reason = f"  ({planned.reason})" if planned.reason else ""
        print(f"{planned.status:<12} {planned.run_id}  eval {planned.eval_id}{reason}")
    for row in plan.stale:
        print(f"{'stale':<12} {row['run_id']}  eval {row['eval_id'] or '-'}  "
              f"({row['stale']}: {row['reason']})")
    for note in store.quarantined():
        print(f"{'quarantined':<12} {note['run_id']}  in {note['folder']}  ({note['why']})")
    print(plan.headline())
    return 0


def command_summary(args: argparse.Namespace) -> int:
    from vae_zoo.harness.runner import finish_suite
    from vae_zoo.harness.store import SuiteStore
    from vae_zoo.harness.suite import load_suite

    suite = load_suite(args.suite)
    store = SuiteStore(args.results_dir / suite.name)
    if not store.runs.is_dir():
        raise UserError(f"no runs of suite '{suite.name}' in {store.root}")
    return finish_suite(suite, store, [], args.wandb, chosen_device(args, reads=store.root))


def command_list(args: argparse.Namespace) -> int:
    from vae_zoo.data import DATASETS
    from vae_zoo.harness.suite import available_suites, find_suite_file
    from vae_zoo.zoo import KINDS, STANDARD, ZOO

    print(f"models ({len(ZOO)}; pieces other than {', '.join(STANDARD.values())} in brackets):")
    for entry in ZOO.values():
        pieces = ", ".join(name for kind, name in entry.pieces.items() if name != STANDARD[kind])
        print(f"  {entry.name:<18} {entry.description} ({entry.paper})"
              + (f" [{pieces}]" if pieces else ""))
    print("pieces (swap or tune them in a suite's [model.NAME] table; see docs/zoo.md):")
    for kind, registry in KINDS.items():
        print(f"  {kind + ':':<18} {', '.join(registry)}")
    print("datasets:")
    for spec in DATASETS.values():
        print(f"  {spec.name:<14} {spec.description}")
    print("suites:")
    for name in available_suites():
        print(f"  {name:<14} {find_suite_file(name)}")
    return 0


def command_report(args: argparse.Namespace) -> int:
    from vae_zoo.harness.runner import write_summary
    from vae_zoo.harness.store import SuiteStore
    from vae_zoo.harness.suite import load_suite
    from vae_zoo.report import build_report

    suite = load_suite(args.suite)
    results = args.results_dir / suite.name
    if not (results / "runs").is_dir():
        raise UserError(f"no results for suite '{suite.name}' in {results}; "
                        f"run `vae-zoo run {args.suite}` first")
    # The report shows the cells of the suite's current plan only: plan it again first.
    write_summary(suite, SuiteStore(results), chosen_device(args, reads=results))
    written = build_report(results, args.out / suite.name, references=suite.references,
                           baseline=suite.baseline)
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


def command_export(args: argparse.Namespace) -> int:
    from vae_zoo.harness.exchange import export_suite
    from vae_zoo.harness.store import SuiteStore
    from vae_zoo.harness.suite import load_suite

    suite = load_suite(args.suite)
    exported = export_suite(suite, SuiteStore(args.results_dir / suite.name), args.out,
                            chosen_device(args, reads=args.results_dir / suite.name))
    left_out = (f"; {exported.not_finished} cells not finished left out"
                if exported.not_finished else "")
    print(f"exported {exported.runs} finished runs of {suite.name} to {exported.folder}"
          f"{left_out}")
    if exported.without_weights:
        print(f"warning: {exported.without_weights} of {exported.runs} runs of {suite.name} "
              f"have no checkpoint and are exported without weights", file=sys.stderr)
    return 0


def command_import(args: argparse.Namespace) -> int:
    from vae_zoo.harness.exchange import import_suite

    imported = import_suite(args.folder, args.results_dir)
    present = f"; {len(imported.present)} already there" if imported.present else ""
    print(f"imported {len(imported.imported)} runs of {imported.suite} into "
          f"{args.results_dir / imported.suite}{present}")
    device = " --device cuda" if imported.device == "cuda" else ""
    print(f"`vae-zoo report {imported.suite_file} --results-dir {args.results_dir}{device}` "
          f"builds the report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
