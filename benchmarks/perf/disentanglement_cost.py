"""What one cell of the `disentanglement` suite costs: training time per epoch and the time of
each evaluation group, on the suite's data, model and settings, on one device.

Loads sprites as the suite does (the whole grid at 64 px by default), builds a zoo entry with
the suite's hyper-parameters, trains `--epochs` epochs, then runs every evaluation group with
the suite's [eval] (disentanglement_lib's settings for the disentanglement metrics) and prints
each group's seconds, the metrics, and an estimate of the whole suite's wall time: cells x
(epochs x seconds per epoch + evaluation seconds), one cell at a time.

    python benchmarks/perf/disentanglement_cost.py [--device cuda] [--epochs 1]
        [--model beta-vae] [--side 64] [--subsample 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from vae_zoo import zoo
from vae_zoo.data import load_dataset
from vae_zoo.evaluate import METRIC_GROUPS, evaluate, sample_reference
from vae_zoo.harness.features import feature_net_for
from vae_zoo.harness.suite import load_suite
from vae_zoo.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="disentanglement")
    parser.add_argument("--model", default="beta-vae[beta=4]")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--side", type=int, default=None, help="override the suite's side")
    parser.add_argument("--subsample", type=int, default=None)
    parser.add_argument("--eval", default="", help="[eval] overrides, key=value,...")
    args = parser.parse_args()

    suite = load_suite(args.suite)
    cell = next(c for c in suite.cells() if c.model.name == args.model)
    options = dict(cell.dataset_options)
    options.update({k: v for k, v in (("side", args.side), ("subsample", args.subsample))
                    if v is not None})
    started = time.perf_counter()
    data = load_dataset(cell.dataset, options).to(args.device)
    print(f"data: {len(data.train):,} training images {data.image_shape} on {args.device} in "
          f"{time.perf_counter() - started:.1f} s")
    model, objective = zoo.build(cell.model.entry, data.image_shape, cell.model.hyperparameters)
    model, objective = model.to(args.device), objective.to(args.device)
    config = cell.train.__class__(**{**cell.train.__dict__, "epochs": args.epochs})
    started = time.perf_counter()
    train(model, objective, data, config, seed=0)
    per_epoch = (time.perf_counter() - started) / args.epochs
    print(f"training: {per_epoch:.1f} s per epoch ({len(data.train) / per_epoch:,.0f} images/s)")

    eval_config = cell.eval
    for pair in filter(None, args.eval.split(",")):
        key, value = pair.split("=")
        eval_config = eval_config.__class__(**{**eval_config.__dict__, key: int(value)})
    seconds = {}
    reference = None
    for group in METRIC_GROUPS:
        started = time.perf_counter()
        if group == "samples":
            net, _ = feature_net_for(data, data.fingerprint(), tempfile.mkdtemp(), args.device)
            reference = sample_reference(net, data, eval_config)
        metrics, _ = evaluate(model, data, eval_config, seed=0, samples=reference,
                              log=lambda line: None, groups=(group,))
        seconds[group] = time.perf_counter() - started
        shown = {k: round(v, 3) for k, v in metrics.items() if k != "eval_seconds"}
        print(f"{group}: {seconds[group]:.1f} s {shown}")
    evaluation = sum(seconds.values())
    cells = len(suite.cells())
    total = cells * (cell.train.epochs * per_epoch + evaluation)
    print(f"one cell: {cell.train.epochs} epochs x {per_epoch:.1f} s + evaluation "
          f"{evaluation:.0f} s; the suite's {cells} cells one at a time: {total / 3600:.1f} h")


if __name__ == "__main__":
    main()
