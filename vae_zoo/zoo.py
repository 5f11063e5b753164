"""The zoo: named combinations of an architecture, a likelihood, a prior, an objective and a
gradient estimator.

Each piece declares its typed settings beside its code (a frozen dataclass, see
`vae_zoo.settings`); an entry names its pieces and may change their defaults. A suite may
override any setting of the entry's pieces, or swap a piece (`prior = "vamp"`), and is checked
against the declarations of the pieces it ends up with. Adding a model means adding its piece
(if new), one line in a registry below, and one entry.
"""

from __future__ import annotations

import functools
import json
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from vae_zoo import estimators, likelihoods, nets, priors
from vae_zoo.errors import UserError
from vae_zoo.model import KL_CHOICES, VAE
from vae_zoo.objectives import OBJECTIVES, Objective
from vae_zoo.settings import (
    NoSettings,
    check_value,
    declared,
    defaults,
    is_int,
    is_number,
    shown,
    type_hints,
)

__all__ = ["ZOO", "KINDS", "build", "resolve_hyperparameters", "check_data_fit", "check_size",
           "count_parameters", "is_int", "is_number"]

# Bytes per parameter in training: float32 weights, their gradients and Adam's two moments.
TRAINING_BYTES_PER_PARAMETER = 4 * 4


@dataclass(frozen=True)
class Piece:
    """A registered piece: what builds it, its settings and where it comes from."""

    make: Callable
    Settings: type
    paper: str = ""
    layers: int = 1  # stochastic layers (architectures)


ARCHITECTURES = {
    "mlp": Piece(nets.build_mlp, nets.MLPSettings, "Burda et al. 2015 (one stochastic layer)"),
    "mlp-2layer": Piece(nets.build_mlp_2layer, nets.MLP2LayerSettings,
                        "Burda et al. 2015 (two stochastic layers)", layers=2),
    "conv": Piece(nets.build_conv, nets.ConvSettings, "a small DCGAN-style network"),
    "resnet": Piece(nets.build_resnet, nets.ResNetSettings, "He et al. 2016 (residual blocks)"),
}
# A likelihood's `make` is its class: `from_settings` builds it, `requirement` checks the data.
LIKELIHOODS = {
    "bernoulli": Piece(likelihoods.BernoulliLikelihood, NoSettings, "Kingma & Welling 2014"),
    "gaussian": Piece(likelihoods.GaussianLikelihood, likelihoods.GaussianSettings,
                      "Kingma & Welling 2014; dequantisation: Theis et al. 2016"),
    "continuous-bernoulli": Piece(likelihoods.ContinuousBernoulliLikelihood,
                                  likelihoods.DequantizeSettings,
                                  "Loaiza-Ganem & Cunningham 2019"),
    "discretised-logistic": Piece(likelihoods.DiscretisedLogisticLikelihood, NoSettings,
                                  "Salimans et al. 2017"),
}
PRIORS = {
    "standard-normal": Piece(priors.StandardNormalPrior, priors.StandardNormalPrior.Settings,
                             "Kingma & Welling 2014"),
    "mog": Piece(priors.MixtureOfGaussiansPrior, priors.MixtureSettings,
                 "Tomczak & Welling 2018 (their baseline)"),
    "vamp": Piece(priors.VampPrior, priors.VampSettings, "Tomczak & Welling 2018"),
}
ESTIMATORS = {
    "reparameterisation": Piece(estimators.Reparameterisation,
                                estimators.Reparameterisation.Settings, "Kingma & Welling 2014"),
    "stl": Piece(estimators.StickingTheLanding, estimators.StickingTheLanding.Settings,
                 "Roeder et al. 2017"),
    "dreg": Piece(estimators.DoublyReparameterised, estimators.DoublyReparameterised.Settings,
                  "Tucker et al. 2018"),
}
OBJECTIVE_PIECES = {name: Piece(spec.function, spec.Settings, spec.paper)
                    for name, spec in OBJECTIVES.items()}
# Every kind of piece, in the order a hyper-parameter dictionary lists them.
KINDS: dict[str, dict[str, Piece]] = {
    "architecture": ARCHITECTURES, "likelihood": LIKELIHOODS, "prior": PRIORS,
    "objective": OBJECTIVE_PIECES, "estimator": ESTIMATORS,
}
STANDARD = {"architecture": "mlp", "likelihood": "bernoulli", "prior": "standard-normal",
            "objective": "elbo", "estimator": "reparameterisation"}


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    paper: str
    pieces: dict  # kind -> piece name, the standard ones unless given
    defaults: dict = field(default_factory=dict)  # settings that differ from the pieces'

    def __post_init__(self):
        object.__setattr__(self, "pieces", {**STANDARD, **self.pieces})


def entry(name, description, paper, defaults=None, **pieces) -> ZooEntry:
    return ZooEntry(name, description, paper, pieces, defaults or {})


ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    entry("mlp-vae", "IWAE-paper MLP, ELBO", "Kingma & Welling 2014"),
    entry("conv-vae", "small convolutional encoder/decoder, ELBO", "Kingma & Welling 2014",
          architecture="conv"),
    entry("resnet-vae", "residual convolutional encoder/decoder, ELBO", "He et al. 2016",
          architecture="resnet"),
    entry("beta-vae", "IWAE-paper MLP, ELBO with beta = 4", "Higgins et al. 2017",
          {"beta": 4.0}),
    entry("beta-vae-capacity", "ELBO with a controlled KL capacity", "Burgess et al. 2018",
          objective="beta-vae-capacity"),
    entry("vae-warmup", "ELBO with linear KL warm-up", "Sønderby et al. 2016",
          objective="elbo-warmup"),
    entry("vae-free-bits", "ELBO with free bits per latent dimension", "Kingma et al. 2016",
          objective="elbo-free-bits"),
    entry("vae-stl", "ELBO, sticking-the-landing gradient", "Roeder et al. 2017",
          estimator="stl"),
    entry("iwae", "IWAE-paper MLP, importance-weighted bound with k = 5", "Burda et al. 2015",
          objective="iwae"),
    entry("iwae-dreg", "IWAE bound, doubly reparameterised gradient", "Tucker et al. 2018",
          objective="iwae", estimator="dreg"),
    entry("miwae", "mean of m = 4 IWAE bounds of k = 4", "Rainforth et al. 2018",
          {"k": 4, "m": 4}, objective="miwae"),
    entry("ciwae", "beta·ELBO + (1 - beta)·IWAE, beta = 0.5", "Rainforth et al. 2018",
          objective="ciwae"),
    entry("piwae", "decoder on IWAE(16), encoder on MIWAE(4, 4)", "Rainforth et al. 2018",
          {"k": 4, "m": 4}, objective="piwae"),
    entry("vae-2layer", "two stochastic layers (100, 50), ELBO", "Burda et al. 2015",
          architecture="mlp-2layer"),
    entry("iwae-2layer", "two stochastic layers (100, 50), IWAE bound with k = 5",
          "Burda et al. 2015", architecture="mlp-2layer", objective="iwae"),
    entry("vamp-vae", "ELBO with a VampPrior of 100 pseudo-inputs", "Tomczak & Welling 2018",
          prior="vamp"),
    entry("mog-vae", "ELBO with a learned mixture of 10 Gaussians as prior",
          "Tomczak & Welling 2018 (baseline)", prior="mog"),
    entry("beta-tcvae", "total correlation weighted by beta = 6", "Chen et al. 2018",
          objective="beta-tcvae"),
    entry("factor-vae", "total correlation by a discriminator, gamma = 10", "Kim & Mnih 2018",
          objective="factor-vae"),
    entry("dip-vae-i", "ELBO + covariance of the posterior means towards I",
          "Kumar et al. 2018", objective="dip-vae-i"),
    entry("dip-vae-ii", "ELBO + covariance of q(z) towards I", "Kumar et al. 2018",
          objective="dip-vae-ii"),
]}


def settings_fields(selection: dict[str, str]) -> dict[str, tuple[str, object, dict]]:
    """Every setting of the selected pieces: name -> (kind, field declaration, type hints)."""
    found = {}
    for kind, name in selection.items():
        settings_class = KINDS[kind][name].Settings
        hints = type_hints(settings_class)
        for key, declaration in declared(settings_class).items():
            found[key] = (kind, declaration, hints)
    return found


def list_valued_settings(entry_name: str, table: dict) -> list[str]:
    """The settings whose single value is a list, for the pieces `table` (a suite's
    [model.NAME]) selects: a list of lists there is a sweep. Where `table` sweeps a piece
    (`prior = ["vamp", "mog"]`), those of every piece it names."""
    found = []
    for kind, registry in KINDS.items():
        chosen = table.get(kind)
        names = [name for name in (chosen if isinstance(chosen, list) else [chosen])
                 if isinstance(name, str) and name in registry]
        for name in names or [ZOO[entry_name].pieces[kind]]:
            settings_class = registry[name].Settings
            hints = type_hints(settings_class)
            found += [key for key in declared(settings_class)
                      if typing.get_origin(hints[key]) is list and key not in found]
    return found


def resolve_hyperparameters(entry_name: str, overrides: dict | None = None) -> dict:
    """The entry's pieces and the settings of those pieces (their declared defaults, the entry's
    and then `overrides`), each checked; and `kl`, how the KL is computed. Raises `UserError`
    naming the first problem."""
    if entry_name not in ZOO:
        raise UserError(f"unknown model '{entry_name}'; valid models: {', '.join(ZOO)}")
    zoo_entry = ZOO[entry_name]
    where = f"model '{entry_name}'"
    overrides = dict(overrides or {})
    selection = {}
    for kind, registry in KINDS.items():
        name = overrides.pop(kind, zoo_entry.pieces[kind])
        if not isinstance(name, str) or name not in registry:
            raise UserError(f"{where}: {kind} = {shown(name)}; valid choices: "
                            f"{', '.join(registry)}")
        selection[kind] = name
    kl = overrides.pop("kl", None)
    fields = settings_fields(selection)
    values = {}
    for kind, name in selection.items():
        values.update(defaults(KINDS[kind][name].Settings))
    values.update({key: value for key, value in zoo_entry.defaults.items() if key in fields})
    for key, value in overrides.items():
        if key not in fields:
            valid = sorted([*KINDS, "kl", *fields])
            pieces = ", ".join(f"{kind} {name}" for kind, name in selection.items())
            raise UserError(f"{where}: hyper-parameter {key!r} is unknown; valid keys: "
                            f"{', '.join(valid)} (the settings of {pieces})")
        _, declaration, hints = fields[key]
        values[key] = check_value(where, key, value, declaration, hints)
    check_compatible(where, selection, values)
    return {**selection, "kl": resolve_kl(where, selection, kl), **values}


def check_compatible(where: str, selection: dict, values: dict) -> None:
    layers = ARCHITECTURES[selection["architecture"]].layers
    objective = OBJECTIVES[selection["objective"]]
    if objective.layers_supported is not None and layers > objective.layers_supported:
        raise UserError(f"{where}: objective {selection['objective']} needs one stochastic "
                        f"layer, and architecture {selection['architecture']} has {layers}")
    estimator = ESTIMATORS[selection["estimator"]].make
    if estimator.layers_supported is not None and layers > estimator.layers_supported:
        raise UserError(f"{where}: estimator {selection['estimator']} supports one stochastic "
                        f"layer, and architecture {selection['architecture']} has {layers}")
    if selection["estimator"] == "dreg" and not objective.importance_weighted:
        raise UserError(f"{where}: estimator dreg is for the IWAE bound; objective "
                        f"{selection['objective']} is not (use objective = \"iwae\")")


def resolve_kl(where: str, selection: dict, requested) -> str:
    """"closed-form" when the pieces allow it (one layer, a prior with a closed form — of ours,
    the standard normal —, an estimator that keeps log q's gradient), else "monte-carlo"; a
    requested value is checked."""
    closed_form_possible = (ARCHITECTURES[selection["architecture"]].layers == 1
                            and PRIORS[selection["prior"]].make.has_closed_form
                            and not ESTIMATORS[selection["estimator"]].make.path_derivative)
    if requested is None:
        return "closed-form" if closed_form_possible else "monte-carlo"
    if requested not in KL_CHOICES:
        raise UserError(f"{where}: kl = {shown(requested)}; valid choices: "
                        f"{', '.join(KL_CHOICES)}")
    if requested == "closed-form" and not closed_form_possible:
        raise UserError(f"{where}: kl = \"closed-form\" needs one stochastic layer, the "
                        "standard-normal prior and an estimator that keeps log q's gradient; "
                        "use kl = \"monte-carlo\"")
    return requested


def check_data_fit(hyperparameters: dict, binarize: str) -> str | None:
    """Why the model's likelihood does not fit data with this binarisation, or None."""
    likelihood_class = LIKELIHOODS[hyperparameters["likelihood"]].make
    return likelihood_class.requirement(binarize, piece_settings("likelihood", hyperparameters))


def piece_settings(kind: str, hyperparameters: dict):
    """The settings dataclass of the `kind` piece a resolved hyper-parameter dict selects."""
    settings_class = KINDS[kind][hyperparameters[kind]].Settings
    return settings_class(**{key: hyperparameters[key] for key in declared(settings_class)})


def build(entry_name: str, image_shape: tuple[int, int, int],
          hyperparameters: dict | None = None) -> tuple[VAE, Objective]:
    """The model and objective of zoo entry `entry_name` for images of `image_shape`."""
    hp = resolve_hyperparameters(entry_name, hyperparameters)
    image_shape = tuple(image_shape)
    networks = ARCHITECTURES[hp["architecture"]].make(
        image_shape, piece_settings("architecture", hp))
    likelihood = LIKELIHOODS[hp["likelihood"]].make.from_settings(piece_settings("likelihood", hp))
    prior = PRIORS[hp["prior"]].make(networks.latent_dims[-1], image_shape,
                                     piece_settings("prior", hp))
    model = VAE(networks, likelihood, prior, kl=hp["kl"])
    estimator = ESTIMATORS[hp["estimator"]].make()
    objective = Objective(hp["objective"], piece_settings("objective", hp), estimator,
                          latent_dim=networks.latent_dims[0])
    return model, objective


def check_size(entry_name: str, image_shape: tuple[int, int, int], hyperparameters: dict,
               memory: int) -> str | None:
    """Why the model of `entry_name` with (resolved) `hyperparameters` cannot be trained on
    images of `image_shape` on a machine with `memory` bytes, or None: it cannot be built, or
    not run on a batch (e.g. more stride-2 layers than the image has pixels to halve), or its
    parameters, with their gradients and Adam's two moments, need more than `memory`.

    Nothing is allocated: the model is built and run on PyTorch's meta device, which computes
    shapes only; the global random state is left as it was."""
    parameters, problem = meta_run(entry_name, tuple(image_shape),
                                   json.dumps(hyperparameters, sort_keys=True))
    if problem:
        return problem
    needed = parameters * TRAINING_BYTES_PER_PARAMETER
    if needed > memory:
        return (f"has {parameters:,} parameters: with their gradients and Adam's two moments "
                f"they need {needed / 2**30:,.1f} GiB, more than this machine's memory "
                f"({memory / 2**30:,.1f} GiB); use narrower layers or fewer latent dimensions")
    return None


@functools.lru_cache(maxsize=1024)
def meta_run(entry_name: str, image_shape: tuple, hyperparameters_json: str
             ) -> tuple[int, str | None]:
    """(parameters, None) of the model built and run on two images on the meta device, or
    (0, why it cannot be built or run); cached, as every dataset of a suite asks again."""
    hyperparameters = json.loads(hyperparameters_json)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # e.g. "Initializing zero-element tensors is a no-op"
        # Any exception here comes from the settings (e.g. a layer larger than its input).
        try:
            model, objective = build(entry_name, image_shape, hyperparameters)
        except Exception as error:
            return 0, f"cannot be built for images of shape {image_shape}: {first_line(error)}"
        try:
            objective(model, torch.empty(2, *image_shape))
        except Exception as error:
            return 0, f"does not run on images of shape {image_shape}: {first_line(error)}"
        return count_parameters(model) + count_parameters(objective), None


def first_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
