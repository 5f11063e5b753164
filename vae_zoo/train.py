"""The training loop: Adam on mini-batches; every epoch the validation ELBO and the validation
value of the entry's own objective; the checkpoint chosen by `select`; optional early stopping;
and whether training had converged when it stopped.

Selection (`TrainConfig.select`):
- "objective" (default): the epoch with the best validation value of what the entry trains on
  (the IWAE bound for IWAE entries, the β-weighted ELBO for β-VAE, ...), its schedules (KL
  warm-up, capacity) at their end-of-training values so that every epoch is scored by the same
  function;
- "elbo": the epoch with the best validation ELBO (β = 1, one sample);
- "last": the last epoch (the IWAE paper did no early stopping).

Convergence: with E epochs trained and q = ceil(E / 4), training counts as converged when the
best validation criterion of the last q epochs improves on the best of the epochs before by less
than `convergence_tolerance` (relative to the latter's magnitude). Runs of one epoch never count
as converged. The criterion is the selection's ("objective" for "last").
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vae_zoo.data import ImageData
from vae_zoo.metrics.likelihood import elbo_terms
from vae_zoo.model import VAE
from vae_zoo.objectives import Objective, TrainingContext
from vae_zoo.roles import SPEED, STORAGE

LR_SCHEDULES = ("constant", "iwae-paper")
SELECTIONS = ("objective", "elbo", "last")
# A run whose selected weights do not beat the untrained model by this fraction of its selection
# criterion, measured on the same Monte Carlo draws, did not learn (e.g. a learning rate far too
# small): its metrics say so (`learned` = 0). Weights that did not move differ by ~1e-9; a single
# short epoch on a few hundred images gains ~5e-3.
LEARNED_MARGIN = 1e-4
RUNNING_LOSS_EVERY = 50  # batches between progress-bar updates of the running loss


@dataclass(frozen=True)
class TrainConfig:
    """[train]: numbers are positive (non-negative where the default is 0), finite and at most
    their metadata's `maximum` (checked by `suite.parse_dataclass`)."""

    # The budget: epochs trained, or the most epochs with early stopping (`patience` > 0). A
    # suite may write it as `max_epochs` when it sets `patience`.
    epochs: int = field(default=10, metadata={"maximum": 100_000})
    batch_size: int = field(default=100, metadata={"maximum": 100_000})
    learning_rate: float = field(default=1e-3, metadata={"maximum": 1.0})
    # "iwae-paper": Burda et al. (2015): passes i = 0..7 of 3**i epochs each with learning rate
    # 1e-3 * 10**(-i/7); `epochs` then caps the total (3,280 for the full schedule).
    lr_schedule: str = "constant"
    adam_eps: float = field(default=1e-8, metadata={"maximum": 1.0})
    # Validation images per batch. Part of the identity although it looks like a speed setting:
    # the validation ELBO's draws come from the stream training continues with, in blocks whose
    # boundaries follow the batching, so it changes the later training noise and the best epoch.
    eval_batch_size: int = field(default=1000, metadata={"maximum": 100_000})
    select: str = field(default="objective", metadata={"choices": SELECTIONS})
    # Early stopping: stop after this many epochs without a better selection criterion (0: off).
    patience: int = field(default=0, metadata={"maximum": 100_000})
    convergence_tolerance: float = field(default=1e-3, metadata={"maximum": 1.0})
    keep_checkpoints: bool = field(default=True, metadata=STORAGE)  # weights in the run dir
    # Train the seeds of a (dataset, model) group as one stacked ensemble (`vae_zoo.stacked`):
    # each seed's results are those of the seed trained alone, up to float rounding, so it is
    # not part of the identity. CPU only; entries it cannot stack train one seed at a time.
    stack_seeds: bool = field(default=False, metadata=SPEED)


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0  # the selected epoch
    best_value: float = -float("inf")  # its selection criterion (higher is better)
    final_state: dict | None = None  # the last epoch's weights, when they are not the best's
    train_seconds: float = 0.0
    train_images: int = 0
    stopped_early: bool = False
    converged: bool = False
    criterion: str = "val_objective"  # the history column epochs are selected by
    # That criterion for the untrained model, and for the selected weights on the very same
    # draws (common random numbers: their difference is the training's, not the noise's).
    initial_value: float = -float("inf")
    selected_value_same_draws: float = -float("inf")

    @property
    def epochs_trained(self) -> int:
        return len(self.history)

    @property
    def images_per_second(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0

    @property
    def learned(self) -> bool:
        """Whether the selected weights beat the untrained model, on the same draws, by
        `LEARNED_MARGIN` of its criterion's magnitude."""
        margin = LEARNED_MARGIN * abs(self.initial_value)
        return self.selected_value_same_draws > self.initial_value + margin


def criterion_column(select: str) -> str:
    """The history column an epoch is selected by and convergence is judged on."""
    return "val_elbo" if select == "elbo" else "val_objective"


def has_converged(values: list[float], tolerance: float) -> bool:
    """Whether a validation criterion (higher is better, one value per epoch) has stopped
    improving: the best of the last quarter of epochs (at least one) beats the best before it by
    less than `tolerance` times the latter's magnitude."""
    if len(values) < 2:
        return False
    last_quarter = -(-len(values) // 4)
    before, recent = max(values[:-last_quarter]), max(values[-last_quarter:])
    return recent - before < tolerance * abs(before)


def validation_objective(model: VAE, objective: Objective, images: torch.Tensor,
                         batch_size: int, context: TrainingContext) -> float:
    """Mean over `images` of minus the objective's `loss`: the validation value of what the
    entry trains on (higher is better), with schedules at `context`."""
    with torch.no_grad():
        total = 0.0
        for batch in images.split(batch_size):
            total += objective(model, batch, context)["loss"].double().sum().item()
        return -total / len(images)


def validation_columns(model: VAE, objective: Objective, images: torch.Tensor,
                       config: TrainConfig, context: TrainingContext) -> dict[str, float]:
    """An epoch's validation columns of the history: the ELBO's terms (β = 1, one sample) and
    the objective's validation value, drawn in that order from the global stream."""
    model.eval()
    val = {name: values.mean().item() for name, values in
           elbo_terms(model, images, config.eval_batch_size).items()}
    return {"val_elbo": val["elbo"], "val_recon": val["recon"], "val_kl": val["kl"],
            "val_objective": validation_objective(model, objective, images,
                                                  config.eval_batch_size, context)}


def random_state(device: torch.device) -> tuple:
    """The global random streams' state (the CPU's, and the device's on CUDA)."""
    return (torch.get_rng_state(),
            torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def criterion_on_draws(model: VAE, objective: Objective, images: torch.Tensor,
                       config: TrainConfig, context: TrainingContext, state: tuple) -> float:
    """The selection criterion of `model` with its Monte Carlo draws taken from `state`, on a
    fork of the random streams: the training around it draws exactly what it would without."""
    device = images.device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        model.eval()
        if criterion_column(config.select) == "val_elbo":
            return elbo_terms(model, images, config.eval_batch_size)["elbo"].mean().item()
        return validation_objective(model, objective, images, config.eval_batch_size, context)


def backward(model: VAE, terms: dict) -> None:
    """Gradients of the batch mean of the objective's `surrogate` (or `loss`) for every
    parameter, except that the encoders take theirs from `encoder_surrogate` when there is one."""
    loss = terms.get("surrogate", terms["loss"]).mean()
    if "encoder_surrogate" not in terms:
        loss.backward()
        return
    encoder_parameters = list(model.encoders.parameters())
    encoder_gradients = torch.autograd.grad(terms["encoder_surrogate"].mean(),
                                            encoder_parameters, retain_graph=True)
    loss.backward()
    for parameter, gradient in zip(encoder_parameters, encoder_gradients, strict=True):
        parameter.grad = gradient


def learning_rate_at(config: TrainConfig, epoch: int) -> float:
    """Learning rate for 1-based `epoch`."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    completed, stage = 0, 0
    while completed + 3**stage < epoch:
        completed += 3**stage
        stage += 1
    return config.learning_rate * 10 ** (-stage / 7)


def train(
    model: VAE,
    objective: Objective,
    data: ImageData,
    config: TrainConfig,
    *,
    seed: int,
    on_epoch: Callable[[dict], None] | None = None,
    on_running_loss: Callable[[float], None] | None = None,
) -> TrainResult:
    """Train `model` on `data.train` and leave it holding the weights of the epoch that
    `config.select` picks. Raises `DivergenceError` when the loss stops being finite.

    `on_epoch` receives each epoch's history row (for progress bars and trackers), and
    `on_running_loss` the mean training loss of the epoch so far, every RUNNING_LOSS_EVERY batches.
    """
    generator = torch.Generator(device=data.device).manual_seed(seed)
    # The fused kernel: one pass over each parameter instead of seven (2x faster on a CPU for
    # the IWAE paper's MLP); the same update up to float rounding (tests/test_speed_paths.py).
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, eps=config.adam_eps,
                                 fused=True)
    objective.to(data.device)
    steps_per_epoch = -(-len(data.train) // config.batch_size)
    # Every epoch's validation objective is scored with the schedules' final values.
    final_context = TrainingContext(config.epochs * steps_per_epoch, steps_per_epoch,
                                    len(data.train))
    criterion = criterion_column(config.select)
    step = 0
    result = TrainResult()
    best_state = copy.deepcopy(model.state_dict())
    val_images = data.val.images  # converted from uint8 once, not every epoch
    result.criterion = criterion
    # The untrained model's criterion, on draws from the streams as they are now; the selected
    # weights are measured on the same draws at the end.
    draws = random_state(val_images.device)
    result.initial_value = criterion_on_draws(model, objective, val_images, config,
                                              final_context, draws)
    for epoch in range(1, config.epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(config, epoch)
        model.train()
        started = time.perf_counter()
        # Running sums stay on the device: no host synchronisation inside the epoch.
        sums = torch.zeros(3, device=data.device)
        seen = 0
        for index, batch in enumerate(data.train_batches(config.batch_size, generator), 1):
            terms = objective(model, batch, TrainingContext(step, steps_per_epoch, len(data.train)))
            optimizer.zero_grad(set_to_none=True)
            backward(model, terms)
            optimizer.step()
            objective.update_auxiliary()
            step += 1
            sums += torch.stack([terms[name].detach().sum() for name in ("loss", "recon", "kl")])
            seen += len(batch)
            if on_running_loss is not None and index % RUNNING_LOSS_EVERY == 0:
                on_running_loss(sums[0].item() / seen)  # one host sync per RUNNING_LOSS_EVERY
        train_loss, train_recon, train_kl = (sums / len(data.train)).tolist()
        seconds = time.perf_counter() - started
        result.train_seconds += seconds
        result.train_images += len(data.train)
        if not torch.isfinite(sums).all():
            raise DivergenceError(f"diverged: training loss is {train_loss} at epoch {epoch}")

        row = {"epoch": epoch, "train_loss": train_loss, "train_recon": train_recon,
               "train_kl": train_kl,
               **validation_columns(model, objective, val_images, config, final_context),
               "seconds": seconds}
        best_state = record_epoch(result, row, model, best_state, config)
        if on_epoch is not None:
            on_epoch(row)
        if result.stopped_early:
            break
    finish_training(result, model, best_state, objective, val_images, config, final_context,
                    draws)
    return result


def record_epoch(result: TrainResult, row: dict, model: VAE, best_state: dict,
                 config: TrainConfig) -> dict:
    """An epoch ends with `model` holding its weights: its history row is recorded, the epoch
    selected if `config.select` prefers it (the weights to keep are returned: `best_state` or
    a copy of the model's), and `result.stopped_early` set when early stopping ends training.
    Shared by `train` and the stacked trainer (`vae_zoo.stacked`), one seed at a time."""
    result.history.append(row)
    if config.select == "last" or row[result.criterion] > result.best_value:
        result.best_epoch, result.best_value = row["epoch"], row[result.criterion]
        best_state = copy.deepcopy(model.state_dict())
    values = [past[result.criterion] for past in result.history]
    if config.patience and row["epoch"] - values.index(max(values)) - 1 >= config.patience:
        result.stopped_early = True
    return best_state


def finish_training(result: TrainResult, model: VAE, best_state: dict, objective: Objective,
                    images: torch.Tensor, config: TrainConfig, context: TrainingContext,
                    draws: tuple) -> None:
    """As training ends: convergence, the last weights kept when they are not the selected
    ones, the selected weights loaded and measured on the untrained model's `draws`."""
    result.converged = has_converged([row[result.criterion] for row in result.history],
                                     config.convergence_tolerance)
    if result.best_epoch != result.epochs_trained:
        result.final_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    result.selected_value_same_draws = criterion_on_draws(model, objective, images, config,
                                                          context, draws)
    model.eval()
