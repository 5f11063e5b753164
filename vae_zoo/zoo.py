"""The zoo: named combinations of an architecture, a likelihood, a prior and an objective.

An entry is a declaration with default hyper-parameters; a suite may override any of them.
Adding a model means adding its pieces (if new) and one line here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from vae_zoo.distributions import LIKELIHOODS, PRIORS
from vae_zoo.errors import UserError
from vae_zoo.model import VAE
from vae_zoo.nets import ACTIVATIONS, ARCHITECTURES
from vae_zoo.objectives import OBJECTIVES, Objective

# The IWAE paper's architecture: 784-200-200 tanh to 50 Gaussian latents, mirrored decoder.
MLP = {"latent_dim": 50, "hidden": [200, 200], "activation": "tanh"}
# Small on purpose: importance sampling decodes K samples per test image, and a conv decoder costs
# ~20x the MLP's per sample on a CPU.
CONV = {"latent_dim": 32, "channels": [16, 32], "hidden": 128, "activation": "relu"}
BERNOULLI = {"likelihood": "bernoulli", "gaussian_scale": "learned", "prior": "standard-normal"}


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    architecture: str
    objective: str
    defaults: dict


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in [
        ZooEntry("mlp-vae", "IWAE-paper MLP, ELBO", "mlp", "elbo",
                 {**MLP, **BERNOULLI, "beta": 1.0, "k": 1}),
        ZooEntry("conv-vae", "small convolutional encoder/decoder, ELBO", "conv", "elbo",
                 {**CONV, **BERNOULLI, "beta": 1.0, "k": 1}),
        ZooEntry("beta-vae", "IWAE-paper MLP, ELBO with beta = 4", "mlp", "elbo",
                 {**MLP, **BERNOULLI, "beta": 4.0, "k": 1}),
        ZooEntry("iwae", "IWAE-paper MLP, importance-weighted bound with k = 5", "mlp", "iwae",
                 {**MLP, **BERNOULLI, "k": 5}),
    ]
}

CHOICES = {
    "activation": tuple(ACTIVATIONS),
    "likelihood": tuple(LIKELIHOODS),
    "prior": tuple(PRIORS),
}
# The settings each objective takes besides k.
OBJECTIVE_SETTINGS = {"elbo": ("beta",), "iwae": ()}
assert set(OBJECTIVE_SETTINGS) == set(OBJECTIVES)


def check_hyperparameter(entry: ZooEntry, key: str, value) -> None:
    """Raise `UserError` unless `value` is a valid setting of `key` for `entry`."""
    where = f"model '{entry.name}': hyper-parameter '{key}'"
    if key not in entry.defaults:
        raise UserError(f"{where} is unknown; valid keys: {', '.join(sorted(entry.defaults))}")
    default = entry.defaults[key]
    if key in CHOICES:
        if value not in CHOICES[key]:
            raise UserError(f"{where} = {value!r}; valid choices: {', '.join(CHOICES[key])}")
    elif key == "gaussian_scale":
        valid = value == "learned" or (is_number(value) and value > 0)
        if not valid:
            raise UserError(f"{where} = {value!r}; expected \"learned\" or a positive number")
    elif isinstance(default, list):
        if not (isinstance(value, list) and value and all(is_int(v) and v > 0 for v in value)):
            raise UserError(f"{where} = {value!r}; expected a list of positive integers")
    elif isinstance(default, int):
        if not (is_int(value) and value > 0):
            raise UserError(f"{where} = {value!r}; expected a positive integer")
    elif isinstance(default, float) and not (is_number(value) and value >= 0):
        raise UserError(f"{where} = {value!r}; expected a non-negative number")


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolve_hyperparameters(entry_name: str, overrides: dict | None = None) -> dict:
    """The entry's defaults updated with `overrides`, each checked."""
    if entry_name not in ZOO:
        raise UserError(f"unknown model '{entry_name}'; valid models: {', '.join(ZOO)}")
    entry = ZOO[entry_name]
    for key, value in (overrides or {}).items():
        check_hyperparameter(entry, key, value)
    resolved = {**entry.defaults, **(overrides or {})}
    return {key: float(value) if isinstance(entry.defaults[key], float) else value
            for key, value in resolved.items()}


def build(entry_name: str, image_shape: tuple[int, int, int],
          hyperparameters: dict | None = None) -> tuple[VAE, Objective]:
    """The model and objective of zoo entry `entry_name` for images of `image_shape`."""
    entry = ZOO[entry_name]
    hp = resolve_hyperparameters(entry_name, hyperparameters)
    encoder_class, decoder_class = ARCHITECTURES[entry.architecture]
    arch_keys = {"mlp": ("hidden", "activation"), "conv": ("channels", "hidden", "activation")}
    arch = {key: hp[key] for key in arch_keys[entry.architecture]}
    likelihood = (LIKELIHOODS["gaussian"](hp["gaussian_scale"]) if hp["likelihood"] == "gaussian"
                  else LIKELIHOODS[hp["likelihood"]]())
    model = VAE(
        encoder=encoder_class(image_shape, hp["latent_dim"], **arch),
        decoder=decoder_class(image_shape, hp["latent_dim"], **arch),
        likelihood=likelihood,
        prior=PRIORS[hp["prior"]](),
        latent_dim=hp["latent_dim"],
    )
    settings = {key: hp[key] for key in OBJECTIVE_SETTINGS[entry.objective]}
    return model, Objective(entry.objective, k=hp["k"], settings=settings)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
