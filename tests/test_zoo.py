"""Every zoo entry builds, runs and has the documented defaults; overrides are validated."""

import pytest
import torch

from vae_zoo import zoo
from vae_zoo.data import DATASETS, load_dataset
from vae_zoo.errors import UserError

SMALL = {"circles": {"train_size": 60, "val_size": 20, "test_size": 20, "side": 16},
         "digits": {}, "mnist": {"val_size": 50}, "fashion-mnist": {"val_size": 50}}


@pytest.mark.parametrize("dataset", sorted(DATASETS))
@pytest.mark.parametrize("entry", sorted(zoo.ZOO))
def test_every_entry_runs_on_every_dataset(entry, dataset, idx_data_root):
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
    assert objective.name == "elbo" and objective.settings == {"beta": 1.0}


def test_entry_defaults():
    assert zoo.build("beta-vae", (1, 8, 8))[1].settings == {"beta": 4.0}
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
    ({"likelihood": "poisson"}, "valid choices: bernoulli, gaussian"),
    ({"hidden": [200, -1]}, "list of positive integers"),
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        zoo.resolve_hyperparameters("iwae", overrides)
