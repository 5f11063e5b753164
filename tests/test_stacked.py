"""Stacked training: the seeds of a cell trained as one stack get, seed by seed, what training
each alone gives (history, selected epoch, weights), and entries that cannot be stacked so are
refused with the reason."""

import pytest
import torch

from vae_zoo import zoo
from vae_zoo.data import Split
from vae_zoo.data.batches import make_splits
from vae_zoo.stacked import build_seeds, stackable, train_stacked
from vae_zoo.train import DivergenceError, TrainConfig, train

SEEDS = [0, 1, 2]
SMALL = {"hidden": [16], "latent_dim": 4}
HISTORY = ("train_loss", "train_recon", "train_kl", "val_elbo", "val_recon", "val_kl",
           "val_objective")
# Stacked against sequential, over every entry below, the weights differ by at most 4e-9 (mog-vae;
# the others are bitwise equal) and the history not at all: the tolerance leaves room for other
# BLAS builds.
RTOL, ATOL = 1e-4, 1e-5
# Tiny models train faster on one thread than on several fighting over shared cores.
pytestmark = pytest.mark.usefixtures("one_thread")


def random_images(binarize: str, count: int = 300, side: int = 8):
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (count + 60, 1, side, side), generator=generator,
                           dtype=torch.uint8)
    return make_splits("random", Split(pixels[:count]), Split(pixels[count:]), val_size=60,
                       binarize=binarize)


def sequential(entry, hyperparameters, data, config):
    """What the harness does: per seed, seed the global stream, build, train."""
    runs = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        model, objective = zoo.build(entry, data.image_shape, hyperparameters)
        runs.append((model, train(model, objective, data, config, seed=seed)))
    return runs


def stacked(entry, hyperparameters, data, config):
    models, objectives, states = build_seeds(entry, data.image_shape, hyperparameters, SEEDS)
    return models, train_stacked(models, objectives, data, config, SEEDS, states)


def assert_same_run(alone, together, stacked_model, sequential_model):
    assert together.best_epoch == alone.best_epoch
    assert together.epochs_trained == alone.epochs_trained
    for row, expected in zip(together.history, alone.history, strict=True):
        for column in HISTORY:
            assert row[column] == pytest.approx(expected[column], rel=RTOL, abs=ATOL), column
    assert together.initial_value == pytest.approx(alone.initial_value, rel=1e-6)
    assert together.selected_value_same_draws == pytest.approx(
        alone.selected_value_same_draws, rel=RTOL, abs=ATOL)
    assert (together.final_state is None) == (alone.final_state is None)
    for name, value in sequential_model.state_dict().items():
        torch.testing.assert_close(stacked_model.state_dict()[name], value, rtol=RTOL,
                                   atol=ATOL, msg=name)


CASES = {
    "mlp-vae": ({}, "dynamic"),
    "iwae": ({"k": 5}, "dynamic"),
    "beta-vae": ({}, "dynamic"),
    "vae-stl": ({}, "dynamic"),
    "vae-warmup": ({"warmup_epochs": 1.5}, "dynamic"),
    "vae-free-bits": ({}, "dynamic"),
    "beta-vae-capacity": ({"capacity_epochs": 1.5}, "dynamic"),
    "miwae": ({}, "dynamic"),
    "ciwae": ({}, "dynamic"),
    "beta-tcvae": ({}, "dynamic"),
    "dip-vae-i": ({}, "dynamic"),
    "dip-vae-ii": ({}, "dynamic"),
    "mog-vae": ({}, "dynamic"),
    "vamp-vae": ({"pseudo_inputs": 5}, "dynamic"),
    "mlp-vae/discretised-logistic": ({"likelihood": "discretised-logistic"}, "none"),
}


@pytest.mark.parametrize("case", CASES)
def test_each_seed_of_a_stack_trains_as_it_would_alone(case):
    entry = case.split("/")[0]
    overrides, binarize = CASES[case]
    hyperparameters = {**SMALL, **overrides}
    data = random_images(binarize)
    config = TrainConfig(epochs=3, batch_size=50, eval_batch_size=40, learning_rate=3e-3)
    alone = sequential(entry, hyperparameters, data, config)
    models, together = stacked(entry, hyperparameters, data, config)
    assert stackable(models[0], zoo.build(entry, data.image_shape, hyperparameters)[1]) is None
    for (sequential_model, result), stacked_model, stacked_result in zip(alone, models, together):
        assert_same_run(result, stacked_result, stacked_model, sequential_model)
    # The seeds differ from one another: the stack did not train one seed three times.
    assert len({result.history[-1]["train_loss"] for result in together}) == len(SEEDS)


def test_selection_and_early_stopping_are_per_seed():
    """With a learning rate too large to keep improving, seeds stop at different epochs; each
    stops, selects and keeps its last weights as it would alone."""
    data = random_images("dynamic")
    config = TrainConfig(epochs=6, batch_size=50, eval_batch_size=60, learning_rate=0.05,
                         patience=1)
    alone = sequential("mlp-vae", SMALL, data, config)
    models, together = stacked("mlp-vae", SMALL, data, config)
    for (sequential_model, result), stacked_model, stacked_result in zip(alone, models, together):
        assert_same_run(result, stacked_result, stacked_model, sequential_model)
        assert stacked_result.stopped_early == result.stopped_early
        if result.final_state is not None:
            for name, value in result.final_state.items():
                torch.testing.assert_close(stacked_result.final_state[name], value, rtol=RTOL,
                                           atol=ATOL)
    assert any(result.stopped_early for result in together)
    assert len({result.epochs_trained for result in together}) > 1


def test_a_diverging_seed_gets_its_error_and_the_others_train_on():
    data = random_images("dynamic")
    config = TrainConfig(epochs=2, batch_size=50)
    models, objectives, states = build_seeds("mlp-vae", data.image_shape, SMALL, SEEDS)
    with torch.no_grad():
        models[1].decoder.net[-1].bias.fill_(float("nan"))
    together = train_stacked(models, objectives, data, config, SEEDS, states)
    assert isinstance(together[1], DivergenceError)
    assert "nan at epoch 1" in str(together[1])
    alone = sequential("mlp-vae", SMALL, data, config)
    for index in (0, 2):
        assert_same_run(alone[index][1], together[index], models[index], alone[index][0])


def test_the_callers_global_stream_is_left_as_it_was():
    data = random_images("dynamic")
    models, objectives, states = build_seeds("mlp-vae", data.image_shape, SMALL, SEEDS)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train_stacked(models, objectives, data, TrainConfig(epochs=1, batch_size=50), SEEDS, states)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("entry, overrides, reason", [
    ("iwae-dreg", {}, "DoublyReparameterised"),
    ("iwae-2layer", {}, "2 stochastic layers"),
    ("factor-vae", {}, "auxiliary network"),
    ("piwae", {}, "encoder_surrogate"),
    ("mlp-vae", {"likelihood": "gaussian"}, "dequantisation noise"),
    ("mlp-vae", {"likelihood": "continuous-bernoulli"}, "dequantisation noise"),
    ("conv-vae", {}, "channels-last"),
    ("resnet-vae", {}, "not shown to train stacked"),
])
def test_entries_that_would_not_train_as_alone_are_refused_with_the_reason(entry, overrides,
                                                                           reason):
    model, objective = zoo.build(entry, (1, 8, 8), overrides)
    assert reason in stackable(model, objective)
    data = random_images("dynamic")
    with pytest.raises(ValueError, match="not stackable"):
        train_stacked([model], [objective], data, TrainConfig(epochs=1), [0],
                      [torch.get_rng_state()])


def test_a_piece_drawing_random_numbers_inside_the_pass_is_caught_not_silently_different(
        monkeypatch):
    """Were `stackable` to let through a likelihood that draws inside log_prob (dequantisation),
    vmap's randomness check stops the run instead of training on streams no seed would see."""
    monkeypatch.setattr("vae_zoo.stacked.stackable", lambda model, objective: None)
    data = random_images("none")
    models, objectives, states = build_seeds("mlp-vae", data.image_shape,
                                             {**SMALL, "likelihood": "gaussian"}, SEEDS)
    with pytest.raises(RuntimeError, match="random operation"):
        train_stacked(models, objectives, data, TrainConfig(epochs=1, batch_size=50), SEEDS,
                      states)
