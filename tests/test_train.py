"""The training loop: it learns, keeps the epoch its selection rule picks, stops early when
asked, says whether it converged, is seeded, and stops on divergence."""

import pytest
import torch

from vae_zoo import zoo
from vae_zoo.data import load_dataset
from vae_zoo.metrics.likelihood import elbo_terms
from vae_zoo.objectives import ElboSettings, Objective, TrainingContext
from vae_zoo.train import (
    DivergenceError,
    TrainConfig,
    has_converged,
    learning_rate_at,
    train,
    validation_objective,
)

CIRCLES = {"train_size": 600, "val_size": 200, "test_size": 100, "side": 12}


def trained(seed=0, epochs=3, entry="mlp-vae", select="elbo", learning_rate=1e-3,
            **overrides):
    data = load_dataset("circles", CIRCLES)
    torch.manual_seed(seed)
    model, objective = zoo.build(entry, data.image_shape,
                                 {"latent_dim": 4, "hidden": [32], **overrides})
    config = TrainConfig(epochs=epochs, batch_size=50, select=select,
                         learning_rate=learning_rate)
    result = train(model, objective, data, config, seed=seed)
    return model, result, data


def test_training_improves_the_validation_elbo_and_keeps_the_best_epoch():
    model, result, data = trained(epochs=4)
    val_elbo = [row["val_elbo"] for row in result.history]
    assert len(result.history) == result.epochs_trained == 4
    assert val_elbo[-1] > val_elbo[0]
    assert result.best_value == max(val_elbo)
    assert result.best_epoch == 1 + val_elbo.index(max(val_elbo))
    torch.manual_seed(0)
    # The model left behind is the best epoch's: re-evaluating it gives that ELBO (up to the
    # noise of one sample of z per image).
    again = elbo_terms(model, data.val.images)["elbo"].mean().item()
    assert abs(again - result.best_value) < 1.0
    assert result.images_per_second > 0


def test_iwae_entries_are_selected_by_their_own_bound():
    """With select = "objective" an IWAE entry's epochs are scored by the validation IWAE bound
    (k = 5), which is above its one-sample ELBO, and the selected epoch is its best."""
    model, result, data = trained(epochs=3, entry="iwae", select="objective", k=5)
    bound = [row["val_objective"] for row in result.history]
    elbo = [row["val_elbo"] for row in result.history]
    assert all(b > e for b, e in zip(bound, elbo))
    assert result.best_value == max(bound)
    assert result.best_epoch == 1 + bound.index(max(bound))


def test_the_validation_objective_of_beta_vae_is_its_beta_weighted_elbo():
    """β = 4: -(recon + 4·KL) with the same draws of z as the ELBO's terms."""
    model, _, data = trained(epochs=2)  # trained, so that the KL is well above zero
    objective = Objective("elbo", ElboSettings(beta=4.0))
    images = data.val.images
    torch.manual_seed(1)
    value = validation_objective(model, objective, images, 50, TrainingContext())
    torch.manual_seed(1)
    terms = {name: [] for name in ("recon", "kl")}
    for batch in images.split(50):
        for name, values in elbo_terms(model, batch).items():
            if name in terms:
                terms[name].append(values.double())
    recon, kl = (torch.cat(terms[name]).mean().item() for name in ("recon", "kl"))
    assert kl > 0.1  # so that β = 4 and β = 1 differ by far more than the tolerance
    assert value == pytest.approx(-(recon + 4 * kl), rel=1e-6)


def test_select_last_keeps_the_last_epoch_even_when_an_earlier_one_was_better():
    model, result, data = trained(epochs=3, select="last", learning_rate=0.5)
    assert result.best_epoch == 3 and result.final_state is None
    assert result.best_value == result.history[-1]["val_objective"]


def test_early_stopping_ends_training_after_patience_epochs_without_improvement():
    """A learning rate of zero never improves on the first epoch: with patience 2 training
    stops after epoch 3, keeps epoch 1 and has converged (nothing moved in the last quarter)."""
    data = load_dataset("circles", CIRCLES)
    torch.manual_seed(0)
    model, objective = zoo.build("mlp-vae", data.image_shape, {"latent_dim": 4, "hidden": [32]})
    config = TrainConfig(epochs=50, batch_size=50, learning_rate=0.0, patience=2, select="elbo")
    result = train(model, objective, data, config, seed=0)
    values = [row["val_elbo"] for row in result.history]
    best = values.index(max(values))
    assert result.stopped_early and result.epochs_trained == best + 3
    assert result.best_epoch == best + 1


def test_a_model_still_improving_has_not_converged():
    _, result, _ = trained(epochs=4)
    values = [row["val_elbo"] for row in result.history]
    assert values[-1] > values[-2] * (1 - 1e-3)  # the last epoch improved by more than 0.1 %
    assert not result.converged


@pytest.mark.parametrize("values, tolerance, converged", [
    ([-100.0], 1e-3, False),  # one epoch: nothing to compare
    ([-100.0, -99.0], 1e-3, False),  # last quarter = last epoch, 1 % better
    ([-100.0, -99.95], 1e-3, True),  # 0.05 % better
    ([-100.0, -99.95], 1e-4, False),
    ([-200.0, -150.0, -120.0, -110.0, -109.0, -108.95, -108.99, -108.97], 1e-3, True),
    ([-200.0, -150.0, -120.0, -110.0, -109.0, -108.95, -108.0, -108.97], 1e-3, False),
    ([-100.0, -101.0, -102.0, -103.0], 1e-3, True),  # getting worse is not improving
    ([10.0, 10.0, 10.0, 10.2], 1e-2, False),  # a positive criterion: relative to |10|
])
def test_convergence_is_judged_on_the_last_quarter_of_training(values, tolerance, converged):
    assert has_converged(values, tolerance) is converged


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


class ScriptedValidation(Objective):
    """The ELBO in training; on the validation split a loss set per epoch by `script`, so that
    the validation objective and the validation ELBO disagree about the best epoch."""

    def __init__(self, script: list[float]):
        super().__init__("elbo", ElboSettings())
        self.script, self.epoch = script, 0

    def forward(self, model, x, context=None):
        terms = super().forward(model, x, context)
        if model.training:
            self.epoch = context.step // context.steps_per_epoch + 1
            return terms
        return {**terms, "loss": torch.full_like(terms["loss"], self.script[self.epoch - 1])}


@pytest.mark.parametrize("select", ["objective", "elbo"])
def test_the_checkpoint_is_the_best_epoch_of_the_selected_criterion(select):
    """The objective is best at epoch 2 (loss 1), the ELBO improves every epoch: select =
    objective keeps epoch 2, select = elbo the ELBO's best."""
    data = load_dataset("circles", CIRCLES)
    torch.manual_seed(0)
    model, _ = zoo.build("mlp-vae", data.image_shape, {"latent_dim": 4, "hidden": [32]})
    objective = ScriptedValidation([5.0, 1.0, 3.0])
    result = train(model, objective, data, TrainConfig(epochs=3, batch_size=50, select=select),
                   seed=0)
    assert [row["val_objective"] for row in result.history] == [-5.0, -1.0, -3.0]
    elbo = [row["val_elbo"] for row in result.history]
    best = 2 if select == "objective" else 1 + elbo.index(max(elbo))
    assert elbo.index(max(elbo)) != 1, "the two criteria must disagree for this test to bite"
    assert result.best_epoch == best
    assert result.best_value == (-1.0 if select == "objective" else max(elbo))
