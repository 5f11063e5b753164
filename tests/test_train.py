"""The training loop: it learns, keeps the best epoch, is seeded, and stops on divergence."""

import pytest
import torch

from vae_zoo import zoo
from vae_zoo.data import load_dataset
from vae_zoo.metrics.likelihood import elbo_terms
from vae_zoo.train import DivergenceError, TrainConfig, learning_rate_at, train

CIRCLES = {"train_size": 600, "val_size": 200, "test_size": 100, "side": 12}


def trained(seed=0, epochs=3, **overrides):
    data = load_dataset("circles", CIRCLES)
    torch.manual_seed(seed)
    model, objective = zoo.build("mlp-vae", data.image_shape,
                                 {"latent_dim": 4, "hidden": [32], **overrides})
    result = train(model, objective, data, TrainConfig(epochs=epochs, batch_size=50), seed=seed)
    return model, result, data


def test_training_improves_the_validation_elbo_and_keeps_the_best_epoch():
    model, result, data = trained(epochs=4)
    val_elbo = [row["val_elbo"] for row in result.history]
    assert len(result.history) == 4
    assert val_elbo[-1] > val_elbo[0]
    assert result.best_val_elbo == max(val_elbo)
    assert result.best_epoch == 1 + val_elbo.index(max(val_elbo))
    torch.manual_seed(0)
    # The model left behind is the best epoch's: re-evaluating it gives that ELBO (up to the
    # noise of one sample of z per image).
    again = elbo_terms(model, data.val.images)["elbo"].mean().item()
    assert abs(again - result.best_val_elbo) < 1.0
    assert result.images_per_second > 0


def test_training_is_reproducible_from_its_seed():
    first, second, other = trained(seed=3)[0], trained(seed=3)[0], trained(seed=4)[0]
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in
                   zip(first.state_dict().values(), other.state_dict().values()))


def test_a_diverging_model_raises():
    data = load_dataset("circles", CIRCLES)
    model, objective = zoo.build("mlp-vae", data.image_shape, {"latent_dim": 4, "hidden": [32]})
    with torch.no_grad():
        model.decoder.net[-1].bias.fill_(float("nan"))
    with pytest.raises(DivergenceError, match="nan at epoch 1"):
        train(model, objective, data, TrainConfig(epochs=2, batch_size=50), seed=0)


def test_iwae_paper_learning_rate_schedule():
    config = TrainConfig(epochs=3280, learning_rate=1e-3, lr_schedule="iwae-paper")
    # Stage i lasts 3**i epochs: epoch 1 is stage 0, epochs 2-4 stage 1, 5-13 stage 2, ...
    assert learning_rate_at(config, 1) == pytest.approx(1e-3)
    assert learning_rate_at(config, 2) == pytest.approx(1e-3 * 10 ** (-1 / 7))
    assert learning_rate_at(config, 4) == pytest.approx(1e-3 * 10 ** (-1 / 7))
    assert learning_rate_at(config, 5) == pytest.approx(1e-3 * 10 ** (-2 / 7))
    assert learning_rate_at(config, 3280) == pytest.approx(1e-3 * 10 ** (-7 / 7))
    assert learning_rate_at(TrainConfig(learning_rate=0.01), 50) == 0.01


def test_the_running_loss_is_reported_during_each_epoch():
    data = load_dataset("circles", CIRCLES)
    torch.manual_seed(0)
    model, objective = zoo.build("mlp-vae", data.image_shape, {"latent_dim": 4, "hidden": [32]})
    running, rows = [], []
    train(model, objective, data, TrainConfig(epochs=1, batch_size=5), seed=0,
          on_epoch=rows.append, on_running_loss=running.append)
    assert len(running) == len(data.train) // 5 // 50  # every 50 batches
    assert all(loss > 0 for loss in running)
    assert abs(running[-1] - rows[0]["train_loss"]) < 0.1 * rows[0]["train_loss"]
