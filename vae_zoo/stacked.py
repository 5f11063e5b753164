"""Training the seeds of one (dataset, model) cell together, as one stacked ensemble.

A cell's seeds train the same architecture on the same data; only their initial weights, their
data order and binarisation, and their draws of z differ. Stacked, every parameter gets a
leading seed dimension (S, ...), one pass of the model over a batch of (S, B, C, H, W) images
is `torch.func.vmap` of the library's own pass over the seeds, and one fused Adam step updates
every seed. What it saves is per-step overhead (S times fewer kernel launches, Python calls
and optimiser steps), not arithmetic: on a 2-core CPU, 3 seeds of a small MLP (hidden [16])
train ~1.5x faster stacked, while the IWAE paper's MLP at batch 100, bound by its matrix
products (batched, they cost what S separate ones do), trains at the same speed either way
(`benchmarks/perf/stacked.py`).

`train_stacked` gives each seed what `train` gives it alone, up to float rounding: the same
learning-rate schedule, history, selection, early stopping, convergence and divergence, from
the same random numbers. The global stream a sequential run would draw z from is, per seed, a
`torch.Generator` holding that seed's state; the noise is drawn from it outside vmap and handed
in, and the validation passes run on the global stream with the seed's state swapped in.

Only entries shown equal to sequential training by `tests/test_stacked.py` are stacked;
`stackable` says why any other is not.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from vae_zoo import zoo
from vae_zoo.data import ImageData
from vae_zoo.estimators import Reparameterisation, StickingTheLanding
from vae_zoo.gaussian import DiagonalGaussian
from vae_zoo.likelihoods import BernoulliLikelihood, DiscretisedLogisticLikelihood
from vae_zoo.model import VAE
from vae_zoo.nets import MLPDecoder, MLPEncoder
from vae_zoo.objectives import Objective, TrainingContext
from vae_zoo.priors import MixtureOfGaussiansPrior, StandardNormalPrior, VampPrior
from vae_zoo.train import (
    DivergenceError,
    TrainConfig,
    TrainResult,
    criterion_column,
    criterion_on_draws,
    finish_training,
    learning_rate_at,
    record_epoch,
    validation_columns,
)

# The pieces tests/test_stacked.py trains stacked and sequentially and finds equal. Each draws
# no random numbers inside the model pass except q(z₁|x)'s, which the stack hands in.
STACKABLE_OBJECTIVES = ("elbo", "elbo-warmup", "elbo-free-bits", "beta-vae-capacity", "iwae",
                        "miwae", "ciwae", "beta-tcvae", "dip-vae-i", "dip-vae-ii")
STACKABLE_ESTIMATORS = (Reparameterisation, StickingTheLanding)
STACKABLE_LIKELIHOODS = (BernoulliLikelihood, DiscretisedLogisticLikelihood)
STACKABLE_PRIORS = (StandardNormalPrior, MixtureOfGaussiansPrior, VampPrior)
STACKABLE_NETWORKS = ((MLPEncoder, MLPDecoder),)
REFUSED_OBJECTIVES = {
    "piwae": "objective piwae differentiates the encoder by a second surrogate "
             "(encoder_surrogate), which the stacked backward pass does not do",
}


def stackable(model: VAE, objective: Objective) -> str | None:
    """None when the seeds of this model and objective can be trained as one stack with the
    results of training them one by one; else why not, in words (for a log line)."""
    if model.layers != 1:
        return (f"{model.layers} stochastic layers: the upper layers draw their z inside the "
                "model pass, where the stack cannot hand in each seed's noise")
    if objective.auxiliary is not None:
        return (f"objective {objective.name} trains an auxiliary network "
                f"({type(objective.auxiliary).__name__}) with its own optimiser and random draws")
    if type(objective.estimator) not in STACKABLE_ESTIMATORS:
        return (f"estimator {type(objective.estimator).__name__} is not shown to train stacked "
                "as sequentially (DReG rescales z's gradient with a hook inside the pass)")
    if not isinstance(model.likelihood, STACKABLE_LIKELIHOODS):
        name = type(model.likelihood).__name__
        if getattr(model.likelihood, "dequantize", False):
            return (f"likelihood {name} draws dequantisation noise from the global stream "
                    "inside log_prob, which a stack cannot draw per seed")
        return f"likelihood {name} is not shown to train stacked as sequentially"
    if not isinstance(model.prior, STACKABLE_PRIORS):
        return f"prior {type(model.prior).__name__} is not shown to train stacked as sequentially"
    if objective.name in REFUSED_OBJECTIVES:
        return REFUSED_OBJECTIVES[objective.name]
    if objective.name not in STACKABLE_OBJECTIVES:
        return f"objective {objective.name} is not shown to train stacked as sequentially"
    networks = (type(model.encoder), type(model.decoder))
    if networks not in STACKABLE_NETWORKS:
        return (f"networks {networks[0].__name__}/{networks[1].__name__} are not shown to train "
                "stacked as sequentially (the convolutional ones lay images out channels-last, "
                "which vmap does not support)")
    return None


def build_seeds(entry: str, image_shape: tuple[int, int, int], hyperparameters: dict | None,
                seeds: list[int]) -> tuple[list[VAE], list[Objective], list[Tensor]]:
    """The models and objectives of `entry` for each seed, each built as the sequential runner
    builds it (the global stream seeded with the seed, then `zoo.build`), and the global
    stream's state right after each build: what `train_stacked` takes. The caller's global
    stream is left as it was."""
    models, objectives, rng_states = [], [], []
    with torch.random.fork_rng(devices=[]):
        for seed in seeds:
            torch.manual_seed(seed)
            model, objective = zoo.build(entry, image_shape, hyperparameters)
            models.append(model)
            objectives.append(objective)
            rng_states.append(torch.get_rng_state())
    return models, objectives, rng_states


class NoiseGivenGaussian(DiagonalGaussian):
    """q(z|x) whose `rsample` takes its standard normal noise from outside (vmap cannot draw
    a different stream per seed): loc + noise·scale, as `DiagonalGaussian.rsample`."""

    def __init__(self, posterior: DiagonalGaussian, noise: Tensor):
        super().__init__(posterior.loc, posterior.log_var)
        self.noise = noise  # (k, B, d)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        if self.noise.shape != (*sample_shape, *self.loc.shape):
            raise ValueError(f"noise of shape {tuple(self.noise.shape)} handed in for samples "
                             f"of shape {(*sample_shape, *self.loc.shape)}")
        return self.loc + self.noise * self.scale


class SeedPass(nn.Module):
    """One seed's training terms for a batch, its noise given: the function vmap maps over
    the stack (its parameters swapped in by `functional_call`)."""

    def __init__(self, model: VAE, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: Tensor, noise: Tensor, context: TrainingContext) -> dict[str, Tensor]:
        objective = self.objective
        posterior = NoiseGivenGaussian(self.model.posterior(x), noise)
        out = self.model.sample_pass(x, posterior, objective.k, objective.estimator)
        return objective.spec.function(out, replace(context, auxiliary=objective.auxiliary),
                                       objective.settings)


@dataclass
class SeedRun:
    """One seed of the stack and where its training stands."""

    index: int
    model: VAE
    objective: Objective
    data_order: torch.Generator  # its data order and binarisation, as `train`'s generator
    stream: torch.Generator  # its global stream: z's noise, then the validation passes' draws
    draws: tuple  # the stream's state at the start: the untrained criterion's draws
    result: TrainResult = field(default_factory=TrainResult)
    best_state: dict = field(default_factory=dict)
    training: bool = True
    error: DivergenceError | None = None

    def validate(self, images: Tensor, config: TrainConfig, context: TrainingContext) -> dict:
        """The epoch's validation ELBO terms and objective, drawn from the seed's stream as the
        global stream (exactly where a sequential run's would be)."""
        outside = torch.get_rng_state()
        torch.set_rng_state(self.stream.get_state())
        columns = validation_columns(self.model, self.objective, images, config, context)
        self.stream.set_state(torch.get_rng_state())
        torch.set_rng_state(outside)
        return columns

    def finish(self, images: Tensor, config: TrainConfig, context: TrainingContext) -> None:
        """As `train` ends (`finish_training`), with the seed's epoch weights loaded."""
        finish_training(self.result, self.model, self.best_state, self.objective, images,
                        config, context, self.draws)
        self.training = False


def train_stacked(
    models: list[VAE],
    objectives: list[Objective],
    data: ImageData,
    config: TrainConfig,
    seeds: list[int],
    rng_states: list[Tensor],
    on_epoch: Callable[[int, dict], None] | None = None,
) -> list[TrainResult | DivergenceError]:
    """Train the seeds of one entry together, each as `train(models[i], objectives[i], data,
    config, seed=seeds[i])` would with the global stream in state `rng_states[i]` (its state
    right after building model i: see `build_seeds`), and leave each model holding its selected
    weights. CPU only.

    Returns each seed's `TrainResult`, or in its place the `DivergenceError` that `train` would
    have raised; the other seeds train on. A seed's `train_seconds` is its share (1/S) of the
    stack's time. `on_epoch` receives the seed's index and each epoch's history row. The
    caller's global random stream is left as it was.
    """
    if not len(models) == len(objectives) == len(seeds) == len(rng_states) > 0:
        raise ValueError("train_stacked needs as many objectives, seeds and random states as "
                         f"models (at least one); got {len(models)}, {len(objectives)}, "
                         f"{len(seeds)} and {len(rng_states)}")
    if data.device.type != "cpu":
        raise ValueError(f"train_stacked draws each seed's noise from a CPU generator; the data "
                         f"is on {data.device}")
    for model, objective in zip(models, objectives, strict=True):
        reason = stackable(model, objective)
        if reason is not None:
            raise ValueError(f"not stackable: {reason}")
        if (objective.name, objective.settings, type(objective.estimator)) != (
                objectives[0].name, objectives[0].settings, type(objectives[0].estimator)):
            raise ValueError("train_stacked trains the seeds of one entry: the objectives differ")
    with torch.random.fork_rng(devices=[]):
        return train_seeds(models, objectives, data, config, seeds, rng_states, on_epoch)


class Stack:
    """The seeds' parameters stacked (S, ...), their one optimiser, and the training step that
    maps the library's pass over them."""

    def __init__(self, models: list[VAE], objective: Objective, config: TrainConfig):
        self.params, self.buffers = stack_module_state(models)  # (S, ...) each
        self.optimizer = torch.optim.Adam(self.params.values(), lr=config.learning_rate,
                                          eps=config.adam_eps, fused=True)
        self.seed_pass = SeedPass(models[0], objective)  # its tensors swapped in per call

    def seed_terms(self, params: dict, buffers: dict, x: Tensor, noise: Tensor,
                   context: TrainingContext) -> dict[str, Tensor]:
        tensors = {f"model.{name}": value for name, value in {**params, **buffers}.items()}
        return functional_call(self.seed_pass, tensors, (x, noise, context))

    def step(self, x: Tensor, noise: Tensor, context: TrainingContext) -> dict[str, Tensor]:
        """One Adam step of every seed on its batch (S, B, C, H, W) with its noise (S, k, B, d);
        returns the objective's terms, each (S, B)."""
        self.seed_pass.train()
        # vmap's default `randomness="error"`: a piece that drew random numbers inside the
        # pass (where each seed's stream cannot be followed) would raise, not differ silently.
        terms = vmap(partial(self.seed_terms, context=context))(self.params, self.buffers, x,
                                                                noise)
        self.optimizer.zero_grad(set_to_none=True)
        # The sum of the seeds' batch means: each seed's parameters get their own gradient.
        terms.get("surrogate", terms["loss"]).mean(-1).sum().backward()
        self.optimizer.step()
        return terms

    def load(self, model: VAE, index: int) -> None:
        """Seed `index`'s current weights into `model`."""
        model.load_state_dict({name: values[index]
                               for name, values in {**self.params, **self.buffers}.items()})


def seed_stream(state: Tensor) -> torch.Generator:
    """A CPU generator in `state`: it draws what the global stream would from that state."""
    generator = torch.Generator()
    generator.set_state(state)
    return generator


def train_seeds(models, objectives, data, config, seeds, rng_states, on_epoch):
    """`train_stacked`'s loop: `train`'s, step for step, for every seed at once."""
    for objective in objectives:
        objective.to(data.device)
    steps_per_epoch = -(-len(data.train) // config.batch_size)
    final_context = TrainingContext(config.epochs * steps_per_epoch, steps_per_epoch,
                                    len(data.train))
    val_images = data.val.images
    runs = [SeedRun(index, model, objective, torch.Generator().manual_seed(seed),
                    seed_stream(state), (state, None))
            for index, (model, objective, seed, state)
            in enumerate(zip(models, objectives, seeds, rng_states, strict=True))]
    for run in runs:
        run.result.criterion = criterion_column(config.select)
        run.best_state = copy.deepcopy(run.model.state_dict())
        run.result.initial_value = criterion_on_draws(run.model, run.objective, val_images,
                                                      config, final_context, run.draws)
    stack = Stack(models, objectives[0], config)

    def end_epoch(run: SeedRun, epoch: int, means: Tensor, seconds: float) -> None:
        """As `train` ends an epoch, for one seed holding its epoch's weights: divergence,
        validation, selection and early stopping."""
        result = run.result
        result.train_seconds += seconds
        result.train_images += len(data.train)
        train_loss, train_recon, train_kl = means.tolist()
        if not torch.isfinite(means).all():
            run.error = DivergenceError(f"diverged: training loss is {train_loss} at epoch "
                                        f"{epoch}")
            run.training = False
            return
        row = {"epoch": epoch, "train_loss": train_loss, "train_recon": train_recon,
               "train_kl": train_kl, **run.validate(val_images, config, final_context),
               "seconds": seconds}
        run.best_state = record_epoch(result, row, run.model, run.best_state, config)
        if on_epoch is not None:
            on_epoch(run.index, row)
        if result.stopped_early:
            run.finish(val_images, config, final_context)

    k, latent_dim = objectives[0].k, models[0].latent_dim
    step = 0
    for epoch in range(1, config.epochs + 1):
        if not any(run.training for run in runs):
            break
        for group in stack.optimizer.param_groups:
            group["lr"] = learning_rate_at(config, epoch)
        started = time.perf_counter()
        # Seeds that stopped or diverged are still computed (and ignored): the stack keeps
        # its shape, and the others' numbers do not depend on theirs.
        sums = torch.zeros(len(runs), 3)  # (S, loss/recon/kl)
        epoch_batches = [data.train_batches(config.batch_size, run.data_order) for run in runs]
        for batches in zip(*epoch_batches, strict=True):
            # What each seed's rsample would draw from its global stream: (S, k, B, d).
            noise = torch.stack([torch.randn((k, len(batch), latent_dim), generator=run.stream)
                                 for run, batch in zip(runs, batches, strict=True)])
            terms = stack.step(torch.stack(batches), noise,
                               TrainingContext(step, steps_per_epoch, len(data.train)))
            step += 1
            sums += torch.stack([terms[name].detach().sum(-1) for name in ("loss", "recon", "kl")],
                                dim=-1)
        seconds = (time.perf_counter() - started) / len(runs)  # each seed's share
        for run in runs:
            if run.training:
                stack.load(run.model, run.index)
                end_epoch(run, epoch, sums[run.index] / len(data.train), seconds)
    for run in runs:
        if run.training:
            run.finish(val_images, config, final_context)
    return [run.error or run.result for run in runs]
