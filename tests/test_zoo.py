"""Every zoo entry builds, runs and has the documented defaults; overrides are validated."""

import pytest
import torch

from vae_zoo import zoo
from vae_zoo.data import DATASETS, load_dataset
from vae_zoo.errors import UserError

SMALL = {"circles": {"train_size": 60, "val_size": 20, "test_size": 20, "side": 16},
         "digits": {}, "mnist": {"val_size": 50}, "fashion-mnist": {"val_size": 50},
         "sprites": {"side": 16, "subsample": 100, "val_size": 20, "test_size": 20}}
# dsprites reads the original dSprites file, which the tests do not have; its images have the
# shape of sprites at side 64 (tests/test_sprites.py serves it a small fake file).
RUN_ON = sorted(set(DATASETS) - {"dsprites"})


@pytest.fixture(scope="module")
def sprites_root(tmp_path_factory):
    """A data directory holding the sprites grid at side 16, rendered once for the module."""
    return tmp_path_factory.mktemp("sprites-data")


@pytest.mark.parametrize("dataset", RUN_ON)
@pytest.mark.parametrize("entry", sorted(zoo.ZOO))
def test_every_entry_runs_on_every_dataset(entry, dataset, idx_data_root, sprites_root,
                                           monkeypatch):
    if dataset == "sprites":
        monkeypatch.setenv("VAE_ZOO_DATA", str(sprites_root))
    data = load_dataset(dataset, SMALL[dataset])
    model, objective = zoo.build(entry, data.image_shape)
    batch = data.test.images[:5]
    out = model(batch, 3)
    latent = model.latent_dim
    assert out.z.shape == (3, 5, latent)
    assert out.decoded.shape == (3, 5, *data.image_shape)
    assert out.log_px_given_z.shape == (3, 5)
    terms = objective(model, batch)
    assert all(values.shape == (5,) for values in terms.values())
    terms["loss"].mean().backward()
    assert model.sample(4).shape == (4, *data.image_shape)


def test_mlp_vae_is_the_iwae_papers_architecture():
    model, objective = zoo.build("mlp-vae", (1, 28, 28))
    sizes = [(m.in_features, m.out_features) for m in model.encoder.modules()
             if isinstance(m, torch.nn.Linear)]
    assert sizes == [(784, 200), (200, 200), (200, 100)]
    assert all(isinstance(m, torch.nn.Tanh) for m in model.encoder.net if not
               isinstance(m, torch.nn.Linear))
    assert objective.name == "elbo" and objective.settings.beta == 1.0 and objective.k == 1


def test_entry_defaults():
    assert zoo.build("beta-vae", (1, 8, 8))[1].settings.beta == 4.0
    iwae_objective = zoo.build("iwae", (1, 8, 8))[1]
    assert (iwae_objective.name, iwae_objective.k) == ("iwae", 5)


def test_overrides_change_the_model():
    model, objective = zoo.build("iwae", (1, 8, 8),
                                 {"latent_dim": 4, "k": 50, "likelihood": "gaussian",
                                  "gaussian_scale": 0.1})
    assert model.latent_dim == 4 and objective.k == 50
    assert type(model.likelihood).__name__ == "GaussianLikelihood"


@pytest.mark.parametrize("overrides, message", [
    ({"latnt_dim": 3}, "'latnt_dim' is unknown; valid keys:"),
    ({"latent_dim": "ten"}, "expected a positive integer"),
    ({"beta": 1.0}, "'beta' is unknown"),  # iwae has no β
    ({"likelihood": "poisson"}, "valid choices: bernoulli, gaussian, continuous-bernoulli"),
    ({"hidden": [200, -1]}, "list of positive integers"),
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        zoo.resolve_hyperparameters("iwae", overrides)


def test_kl_is_closed_form_only_where_both_sides_allow_it():
    assert zoo.resolve_hyperparameters("mlp-vae")["kl"] == "closed-form"
    for entry in ("vamp-vae", "mog-vae", "vae-2layer", "vae-stl", "iwae-dreg"):
        assert zoo.resolve_hyperparameters(entry)["kl"] == "monte-carlo", entry
    assert zoo.resolve_hyperparameters("mlp-vae", {"kl": "monte-carlo"})["kl"] == "monte-carlo"
    with pytest.raises(UserError, match="closed-form.*needs one stochastic layer"):
        zoo.resolve_hyperparameters("vamp-vae", {"kl": "closed-form"})


def test_monte_carlo_kl_estimates_the_closed_form():
    torch.manual_seed(0)
    closed, _ = zoo.build("mlp-vae", (1, 4, 4), {"latent_dim": 3, "hidden": [8]})
    sampled, _ = zoo.build("mlp-vae", (1, 4, 4), {"latent_dim": 3, "hidden": [8],
                                                  "kl": "monte-carlo"})
    sampled.load_state_dict(closed.state_dict())
    x = torch.bernoulli(torch.full((4, 1, 4, 4), 0.5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exact = closed(x, 1).kl()
        estimate = sampled(x, 20_000).kl()
    assert torch.allclose(estimate, exact, atol=0.02)


def test_swapping_a_piece_brings_its_settings_and_drops_the_others():
    resolved = zoo.resolve_hyperparameters("mlp-vae", {"prior": "vamp", "pseudo_inputs": 7})
    assert resolved["prior"] == "vamp" and resolved["pseudo_inputs"] == 7
    assert "gaussian_scale" not in resolved
    with pytest.raises(UserError, match="'pseudo_inputs' is unknown"):
        zoo.resolve_hyperparameters("mlp-vae", {"pseudo_inputs": 7})
    model, _ = zoo.build("mlp-vae", (1, 4, 4), {"architecture": "resnet", "channels": [4],
                                                 "hidden": 8, "latent_dim": 2})
    assert model(torch.zeros(2, 1, 4, 4), 3).decoded.shape == (3, 2, 1, 4, 4)


@pytest.mark.parametrize("overrides, message", [
    ({"estimator": "dreg"}, "estimator dreg is for the IWAE bound"),
    ({"architecture": "mlp-2layer", "objective": "beta-tcvae"}, "needs one stochastic layer"),
    ({"architecture": "mlp-2layer", "objective": "iwae", "estimator": "dreg"},
     "supports one stochastic layer"),
    ({"k": 0}, "expected a positive integer"),
    ({"beta": -1.0}, r"expected a number >= 0.0"),
    ({"gaussian_scale": "big"}, "positive number or \"learned\""),
])
def test_incompatible_pieces_and_bad_settings_are_refused(overrides, message):
    likelihood = {"likelihood": "gaussian"} if "gaussian_scale" in overrides else {}
    with pytest.raises(UserError, match=message):
        zoo.resolve_hyperparameters("mlp-vae", {**likelihood, **overrides})


def test_a_two_layer_model_passes_through_both_layers():
    model, objective = zoo.build("iwae-2layer", (1, 8, 8))
    x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.5))
    out = model(x, 3)
    assert [z.shape for z in out.zs] == [(3, 5, 100), (3, 5, 50)]
    assert out.kl_per_dim().shape == (5, 150)
    assert torch.allclose(out.kl_per_dim().sum(-1), out.kl(), atol=1e-4)
    assert [m.shape for m in model.posterior_means(x)] == [(5, 100), (5, 50)]
    assert model.sample(4).shape == (4, 1, 8, 8)
