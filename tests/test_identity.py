"""Run identity: the training and evaluation identities hash exactly what changes results."""

import dataclasses

import pytest

from vae_zoo.harness import identity
from vae_zoo.harness.suite import load_suite


@pytest.fixture(scope="module")
def cell():
    return load_suite("smoke").cells()[0]


def ids(cell, fingerprint="data", device="cpu"):
    training = identity.training_identity(cell, fingerprint, device)
    return (identity.run_id(cell, identity.digest(training)),
            identity.digest(identity.evaluation_identity(cell, device)))


def changed(cell, section, **values):
    return dataclasses.replace(cell, **{section: dataclasses.replace(getattr(cell, section),
                                                                     **values)})


def test_every_cell_of_a_suite_has_its_own_run_id():
    cells = load_suite("smoke").cells()
    assert len({ids(cell)[0] for cell in cells}) == len(cells)


def test_the_run_id_names_the_cell_and_is_stable(cell):
    """The identities are the same in another process, whose `hash()` differs (another
    PYTHONHASHSEED): results found on disk are found again by the next invocation."""
    import os
    import subprocess
    import sys

    run_id, eval_id = ids(cell)
    assert run_id.startswith(f"{cell.dataset}-{cell.model.name}-s{cell.seed}-")
    code = ("from vae_zoo.harness import identity\n"
            "from vae_zoo.harness.suite import load_suite\n"
            "cell = load_suite('smoke').cells()[0]\n"
            "training = identity.training_identity(cell, 'data', 'cpu')\n"
            "print(identity.run_id(cell, identity.digest(training)),\n"
            "      identity.digest(identity.evaluation_identity(cell, 'cpu')))\n")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.stdout.split() == [run_id, eval_id]


def test_other_data_is_another_training(cell):
    assert ids(cell, fingerprint="other-data")[0] != ids(cell)[0]


def test_the_device_class_changes_both_identities(cell):
    run_id, eval_id = ids(cell, device="cuda")
    assert run_id != ids(cell)[0] and eval_id != ids(cell)[1]


def test_the_gpu_index_is_not_part_of_the_identity(cell):
    assert ids(cell, device="cuda:0") == ids(cell, device="cuda:1") == ids(cell, device="cuda")


@pytest.mark.parametrize("values", [{"epochs": 4}, {"learning_rate": 0.01}, {"batch_size": 50},
                                    {"adam_eps": 1e-6}, {"lr_schedule": "iwae-paper"},
                                    {"eval_batch_size": 7}])
def test_training_settings_that_change_the_weights_change_the_run_id(cell, values):
    assert ids(changed(cell, "train", **values))[0] != ids(cell)[0]


@pytest.mark.parametrize("values", [{"keep_checkpoints": False}])
def test_storage_settings_of_training_change_no_identity(cell, values):
    assert ids(changed(cell, "train", **values)) == ids(cell)


@pytest.mark.parametrize("values", [{"nll_samples": 5000}, {"nll_images": 10},
                                    {"iwae_ks": (1, 10)}, {"fid_samples": 100},
                                    {"pr_neighbours": 5}])
def test_evaluation_settings_that_change_metrics_change_only_the_eval_id(cell, values):
    run_id, eval_id = ids(changed(cell, "eval", **values))
    assert run_id == ids(cell)[0] and eval_id != ids(cell)[1]


@pytest.mark.parametrize("values", [{"nll_chunk": 5}, {"nll_batch_size": 7}, {"batch_size": 9},
                                    {"grid_images": 4}, {"latent_points": 10},
                                    {"traversal_steps": 3}])
def test_speed_and_presentation_settings_of_evaluation_change_no_identity(cell, values):
    assert ids(changed(cell, "eval", **values)) == ids(cell)


def test_hyperparameters_and_seed_change_the_run_id_but_the_suite_name_does_not(cell):
    model = dataclasses.replace(cell.model, hyperparameters={
        **cell.model.hyperparameters, "latent_dim": 7})
    assert ids(dataclasses.replace(cell, model=model))[0] != ids(cell)[0]
    assert ids(dataclasses.replace(cell, seed=cell.seed + 1))[0] != ids(cell)[0]
    assert ids(dataclasses.replace(cell, suite="another-suite")) == ids(cell)


def test_differences_name_each_changed_setting(cell):
    before = identity.training_identity(cell, "data", "cpu")
    after = identity.training_identity(changed(cell, "train", epochs=9), "other", "cpu")
    assert identity.differences(before, after) == [
        "dataset.fingerprint: data -> other", f"train.epochs: {cell.train.epochs} -> 9"]
    assert identity.differences(before, before) == []
    assert "no identity recorded" in identity.differences(None, after)[0]


def test_evaluation_settings_are_hashed_as_they_take_effect(cell):
    def eval_id(**values):
        changed_cell = changed(cell, "eval", **values)
        return identity.digest(identity.evaluation_identity(changed_cell, "cpu", test_size=500,
                                                            val_size=300))

    # All the test images, however the suite says it; FID samples capped by the split sizes.
    assert eval_id(nll_images=0) == eval_id(nll_images=500) == eval_id(nll_images=9000)
    assert eval_id(nll_images=499) != eval_id(nll_images=0)
    assert eval_id(fid_samples=300) == eval_id(fid_samples=10000)
    assert eval_id(fid_samples=299) != eval_id(fid_samples=300)
