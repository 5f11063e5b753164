"""Training speed and test NLL of vae-zoo against a bare PyTorch loop, and the speed of vae-zoo's
importance-sampled NLL against a plain one: the issue's table, measured side by side in one
process.

Three loops train the IWAE paper's MLP (784-200-200-50 tanh, Bernoulli) with Adam (lr 1e-3),
batch 100, on Fashion-MNIST (random images of the same size when it is not installed) with
dynamic binarisation, whose cost every loop's time includes:
- a bare loop in the style of pytorch/examples `vae/main.py`, drawing the whole epoch's
  binarisation at once at the start of each epoch (inside the timed region);
- vae-zoo's `mlp-vae` through `vae_zoo.train.train` (`train_seconds`: training batches only,
  not the validation pass between epochs), keeping its last epoch's weights like the bare loop;
- vae-zoo's `iwae`, the same network trained on the IWAE bound with k = 5.
The bare loop and `mlp-vae` start from the same weights (the zoo's, copied into the bare loop's
layers), so after the same steps they should reach a similar NLL. Every trained model is scored
by one plain importance-sampled NLL written here (`plain_nll`), with K samples on the first
test images. On the two vae-zoo models the plain evaluator is also timed against vae-zoo's
`importance_sampled_log_likelihood`, run with the batch size and chunk of the harness's [eval]
defaults.

Each repeat (seed 0, 1, ...) runs the loops back to back, in alternating order so that machine
drift hits every loop alike. Printed: medians over repeats of images/s and of the per-repeat
ratio to the bare loop, and the test NLL as mean ± sd over repeats.

    .venv/bin/python benchmarks/perf/table.py [--epochs 5] [--repeats 3] [--threads N]
                                              [--nll-images 1000] [--samples 1000]
                                              [--train-images N]

Targets: mlp-vae >= 1.0x the bare loop, iwae >= 0.32x; vae-zoo's NLL >= 1.5x the plain one.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import fashion_mnist_sized, first_training_images  # this script's folder
from torch import Tensor, nn
from torch.distributions import Normal

from vae_zoo import zoo
from vae_zoo.data import ImageData
from vae_zoo.evaluate import EvalConfig
from vae_zoo.harness.runner import configure_determinism
from vae_zoo.metrics.likelihood import importance_sampled_log_likelihood
from vae_zoo.model import VAE
from vae_zoo.train import TrainConfig, train

BATCH_SIZE = 100
LEARNING_RATE = 1e-3
LOOPS = ("bare", "mlp-vae", "iwae")
TITLES = {
    "bare": "a bare PyTorch loop (pytorch/examples style; binarisation drawn once per epoch)",
    "mlp-vae": "vae-zoo `mlp-vae` (`vae_zoo.train.train`)",
    "iwae": "vae-zoo `iwae` (k = 5)",
}
TRAIN_TARGETS = {"mlp-vae": 1.0, "iwae": 0.32}  # images/s relative to the bare loop
NLL_TARGET = 1.5  # vae-zoo's NLL images/s relative to the plain evaluator's

Encode = Callable[[Tensor], tuple[Tensor, Tensor]]  # images (B, pixels) → mean, log_var (B, d)
Decode = Callable[[Tensor], Tensor]  # z (K, B, d) → Bernoulli logits (K, B, pixels)


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


# ---- the bare loop ---------------------------------------------------------------------------

class BareVAE(nn.Module):
    """The pytorch/examples VAE with the IWAE paper's layers."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 200), nn.Tanh(), nn.Linear(200, 200),
                                     nn.Tanh(), nn.Linear(200, 2 * 50))
        self.decoder = nn.Sequential(nn.Linear(50, 200), nn.Tanh(), nn.Linear(200, 200),
                                     nn.Tanh(), nn.Linear(200, 784))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        return mean, log_var


def initial_mlp_vae(image_shape: tuple[int, int, int], seed: int) -> VAE:
    """The zoo's `mlp-vae` as built for `seed`: the initial weights every loop starts from."""
    torch.manual_seed(seed)
    model, _ = zoo.build("mlp-vae", image_shape)
    return model


def bare_vae_like(model: VAE) -> BareVAE:
    """A bare VAE holding `model`'s weights. The zoo's MLP encoder and decoder are the same
    Linear/Tanh stacks (their `net`), and the encoder's output splits into (mean, log_var) in the
    same order, so the state dicts load one into the other as they are."""
    bare = BareVAE()
    bare.encoder.load_state_dict(model.encoder.net.state_dict())
    bare.decoder.load_state_dict(model.decoder.net.state_dict())
    return bare


def train_bare(vae: BareVAE, images: Tensor, epochs: int, seed: int) -> float:
    """Train on grey-level `images` (N, 784), binarised afresh every epoch; returns images/s."""
    torch.manual_seed(seed)  # the reparameterisation noise
    generator = torch.Generator().manual_seed(seed)  # binarisation and order
    optimizer = torch.optim.Adam(vae.parameters(), lr=LEARNING_RATE)
    vae.train()
    started = time.perf_counter()
    for _ in range(epochs):
        binary = torch.bernoulli(images, generator=generator)  # (N, 784), this epoch's draw
        order = torch.randperm(len(binary), generator=generator)
        for start in range(0, len(binary), BATCH_SIZE):
            x = binary[order[start:start + BATCH_SIZE]]
            mean, log_var = vae.encode(x)
            z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
            recon = F.binary_cross_entropy_with_logits(vae.decoder(z), x, reduction="sum")
            kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp())
            loss = (recon + kl) / len(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return epochs * len(images) / (time.perf_counter() - started)


# ---- vae-zoo's loop ----------------------------------------------------------------------------

def train_zoo(name: str, data: ImageData, epochs: int, seed: int) -> tuple[VAE, float]:
    """Zoo entry `name` trained by `vae_zoo.train.train`; the model and its training images/s."""
    torch.manual_seed(seed)
    model, objective = zoo.build(name, data.image_shape)
    # "last": score the weights training ends with, as for the bare loop.
    config = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE,
                         select="last", keep_checkpoints=False)
    result = train(model, objective, data, config, seed=seed)
    return model, result.images_per_second


# ---- the shared evaluator ----------------------------------------------------------------------

def plain_nll(encode: Encode, decode: Decode, images: Tensor, samples: int,
              batch_size: int) -> Tensor:
    """-log p(x) per image, (N,), by importance sampling with q(z|x) as the proposal, written
    the plain way: encode a batch, draw its K samples at once, decode them and average the
    weights p(x|z) p(z) / q(z|x) in log space, all in float32.

        -log p(x) ≈ log K - logsumexp_k [log p(x|z_k) + log N(z_k; 0, I) - log q(z_k|x)]
    """
    standard_normal = Normal(0.0, 1.0)
    with torch.no_grad():
        nll = []
        for x in images.flatten(1).split(batch_size):  # (B, pixels)
            mean, log_var = encode(x)  # (B, d)
            posterior = Normal(mean, torch.exp(0.5 * log_var))
            z = posterior.sample((samples,))  # (K, B, d)
            logits = decode(z)  # (K, B, pixels)
            log_px_given_z = -F.binary_cross_entropy_with_logits(
                logits, x.expand_as(logits), reduction="none").sum(-1)  # (K, B)
            log_pz = standard_normal.log_prob(z).sum(-1)
            log_qz = posterior.log_prob(z).sum(-1)
            log_weights = log_px_given_z + log_pz - log_qz  # (K, B)
            nll.append(math.log(samples) - torch.logsumexp(log_weights, dim=0))
        return torch.cat(nll)


def zoo_encode_decode(model: VAE) -> tuple[Encode, Decode]:
    """A zoo MLP model's encoder and decoder in `plain_nll`'s terms (flat images, flat logits)."""
    model.eval()
    return model.encoder, lambda z: model.decoder(z).flatten(-3)


def timed(step: Callable[[], Tensor]) -> tuple[Tensor, float]:
    started = time.perf_counter()
    value = step()
    return value, time.perf_counter() - started


def score(encode: Encode, decode: Decode, model: VAE | None, test_images: Tensor,
          samples: int, seed: int, zoo_first: bool) -> dict[str, float]:
    """Test NLL by the plain evaluator and its images/s; for a zoo model also the images/s of
    vae-zoo's estimator (and its NLL), the two run in the order `zoo_first` says."""
    eval_defaults = EvalConfig()

    def plain() -> Tensor:
        torch.manual_seed(seed)
        return plain_nll(encode, decode, test_images, samples, BATCH_SIZE)

    def vae_zoo() -> Tensor:
        torch.manual_seed(seed)
        return -importance_sampled_log_likelihood(model, test_images, samples,
                                                  eval_defaults.nll_batch_size,
                                                  eval_defaults.nll_chunk)

    evaluators = [("plain", plain)] if model is None else [("plain", plain), ("vae-zoo", vae_zoo)]
    if zoo_first:
        evaluators.reverse()
    record = {}
    for name, evaluator in evaluators:
        nll, seconds = timed(evaluator)
        record[f"nll {name}"] = nll.double().mean().item()
        record[f"nll images/s {name}"] = len(test_images) / seconds
    return record


def measure(name: str, data: ImageData, test_images: Tensor, epochs: int, samples: int,
            seed: int, zoo_first: bool) -> dict[str, float]:
    """Train loop `name` from the initial weights of `seed` and score it: training images/s,
    test NLL and the NLL evaluators' images/s."""
    if name == "bare":
        vae = bare_vae_like(initial_mlp_vae(data.image_shape, seed))
        speed = train_bare(vae, data.train.images.flatten(1), epochs, seed)
        vae.eval()
        encode, decode, model = vae.encode, vae.decoder, None
    else:
        model, speed = train_zoo(name, data, epochs, seed)
        encode, decode = zoo_encode_decode(model)
    scores = score(encode, decode, model, test_images, samples, seed, zoo_first)
    return {"train images/s": speed, **scores}


# ---- the tables --------------------------------------------------------------------------------

def mean_and_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def training_table(records: dict[str, list[dict]], samples: int) -> str:
    bare_speeds = [record["train images/s"] for record in records["bare"]]
    lines = [f"| | train img/s | vs bare loop | test NLL (K={samples}), mean ± sd |",
             "|---|---|---|---|"]
    for name in LOOPS:
        speeds = [record["train images/s"] for record in records[name]]
        ratio = statistics.median(speed / bare for speed, bare in zip(speeds, bare_speeds))
        nll = mean_and_sd([record["nll plain"] for record in records[name]])
        lines.append(f"| {TITLES[name]} | {statistics.median(speeds):,.0f} | {ratio:.2f} | "
                     f"{nll} |")
    return "\n".join(lines)


def nll_speed_table(records: dict[str, list[dict]], samples: int) -> str:
    eval_defaults = EvalConfig()
    lines = [f"| model | plain img/s | vae-zoo img/s (batch {eval_defaults.nll_batch_size}, "
             f"chunk {eval_defaults.nll_chunk}) | vae-zoo / plain | test NLL plain | "
             f"test NLL vae-zoo |", "|---|---|---|---|---|---|"]
    for name in ("mlp-vae", "iwae"):
        plain = [record["nll images/s plain"] for record in records[name]]
        vae_zoo = [record["nll images/s vae-zoo"] for record in records[name]]
        ratio = statistics.median(fast / slow for fast, slow in zip(vae_zoo, plain))
        lines.append(
            f"| `{name}` (K = {samples}) | {statistics.median(plain):,.0f} | "
            f"{statistics.median(vae_zoo):,.0f} | {ratio:.2f} | "
            f"{mean_and_sd([record['nll plain'] for record in records[name]])} | "
            f"{mean_and_sd([record['nll vae-zoo'] for record in records[name]])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="seeds 0 .. R-1")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--nll-images", type=int, default=1000, help="first N test images")
    parser.add_argument("--samples", type=int, default=1000, help="K of the test NLL")
    parser.add_argument("--train-images", type=int, default=0,
                        help="train on the first N training images only (0: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # As the harness runs every cell (runner.denormals_flushed); the bare loop gets it too.
    configure_determinism("cpu")
    torch.set_flush_denormal(True)

    data = first_training_images(fashion_mnist_sized(), args.train_images)
    test_images = data.test.first_images(args.nll_images)
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{data.name}: {len(data.train)} training images, batch {BATCH_SIZE}, "
          f"{args.epochs} epoch(s), {args.repeats} repeat(s); test NLL on {len(test_images)} "
          f"test images, K = {args.samples}")

    records: dict[str, list[dict]] = {name: [] for name in LOOPS}
    for seed in range(args.repeats):
        order = LOOPS if seed % 2 == 0 else LOOPS[::-1]
        for name in order:
            records[name].append(measure(name, data, test_images, args.epochs, args.samples,
                                         seed, zoo_first=seed % 2 == 1))
        print(f"  repeat {seed + 1} (order {', '.join(order)}): " + "   ".join(
            f"{name} {records[name][-1]['train images/s']:,.0f} img/s, "
            f"NLL {records[name][-1]['nll plain']:.2f}" for name in LOOPS))

    print()
    print(training_table(records, args.samples))
    print(f"\ntargets: mlp-vae >= {TRAIN_TARGETS['mlp-vae']:.2f}x the bare loop, "
          f"iwae >= {TRAIN_TARGETS['iwae']:.2f}x (medians of per-repeat ratios)\n")
    print(nll_speed_table(records, args.samples))
    print(f"\ntarget: vae-zoo / plain >= {NLL_TARGET:.1f} (median of per-repeat ratios)")


if __name__ == "__main__":
    main()
