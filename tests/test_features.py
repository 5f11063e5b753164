"""The per-dataset feature network: class labels for unlabelled data, and its cache."""

import json

import pytest
import torch
from test_samples import half_bright_images

from vae_zoo.harness import features
from vae_zoo.harness.features import factor_classes, load_or_train_feature_net
from vae_zoo.metrics.samples import extract_features


def test_factor_classes_form_a_three_by_three_grid_of_first_and_last_factor():
    reference = torch.tensor([[0.0, 5.0, 0.0], [3.0, 5.0, 3.0]])  # ranges [0, 3] for both
    factors = torch.tensor([[0.5, 1.0, 0.5], [1.5, 1.0, 2.5], [2.9, 9.0, 0.1], [3.0, 0.0, 3.0]])
    # class = 3 * bin(first) + bin(last); bins of width 1, the top edge in the last bin
    assert factor_classes(factors, reference).tolist() == [0, 5, 6, 8]


def test_feature_net_cache_is_written_once_and_then_loaded(tmp_path, monkeypatch):
    train_images, train_labels = half_bright_images(512, seed=0)
    test_images, test_labels = half_bright_images(256, seed=10)
    arguments = (tmp_path, "halves-abc123", train_images, train_labels, test_images, test_labels, 2)

    trained, info = load_or_train_feature_net(*arguments, epochs=5)
    assert not info["loaded_from_cache"] and not trained.training
    stored = json.loads((tmp_path / "halves-abc123.json").read_text())
    assert stored["test_accuracy"] == info["test_accuracy"] > 0.9
    assert stored["key"] == "halves-abc123" and stored["num_classes"] == 2
    assert stored["num_features"] == 64 and stored["seed"] == 0 and stored["train_images"] == 512
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "halves-abc123.json",
        "halves-abc123.pt",
    ]

    def no_training(*args, **kwargs):
        raise AssertionError("the cached net should have been loaded")

    monkeypatch.setattr(features.samples, "train_feature_net", no_training)
    loaded, loaded_info = load_or_train_feature_net(*arguments)
    assert loaded_info["loaded_from_cache"] and not loaded.training
    assert {**loaded_info, "loaded_from_cache": False} == info
    assert torch.equal(
        extract_features(loaded, test_images), extract_features(trained, test_images)
    )
    with pytest.raises(ValueError, match="num_classes=2"):
        load_or_train_feature_net(*arguments[:-1], 3)
