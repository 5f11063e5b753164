"""The per-dataset feature network: what it learns to predict, its minimum accuracy, its cache."""

import json

import pytest
import torch
from test_samples import half_bright_images

from vae_zoo.data import ImageData, Split, load_dataset
from vae_zoo.errors import UserError
from vae_zoo.harness import features
from vae_zoo.harness.features import (
    FACTOR_BINS,
    MIN_TEST_ACCURACY,
    AccuracyFloor,
    FeatureNetTooWeak,
    check_accuracy,
    factor_classes,
    feature_net_for,
    load_or_train_feature_net,
    required_accuracy,
    training_targets,
)
from vae_zoo.metrics.samples import FEATURE_NET_VERSION, extract_features

SMALL_CIRCLES = {"side": 8, "train_size": 300, "val_size": 50, "test_size": 100}


def no_training(*args, **kwargs):
    raise AssertionError("the cached net should have been loaded")


# --- what the net learns to predict ------------------------------------------------------------


def test_factor_classes_cut_every_factor_into_five_equal_width_bins():
    reference = torch.tensor([[0.0, 5.0, 10.0], [5.0, 10.0, 15.0]])  # ranges of width 5
    factors = torch.tensor([[0.5, 5.0, 14.9], [1.0, 7.4, 12.0], [4.99, 10.0, 10.0],
                            [-3.0, 99.0, 11.0]])
    # bins of width 1 per factor; the top edge is in the last bin, values outside go to the ends
    assert FACTOR_BINS == 5
    assert factor_classes(factors, reference).tolist() == [
        [0, 0, 4], [1, 2, 2], [4, 4, 0], [0, 4, 1]]


def test_circles_supervise_every_factor_with_its_own_head():
    """Circles have no labels: one head per factor (centre x, centre y, radius), each over
    FACTOR_BINS bins of that factor's training range, for training and test images alike."""
    data = load_dataset("circles", SMALL_CIRCLES)
    train_targets, test_targets, class_counts, heads = training_targets(data)
    assert heads == ("centre_x", "centre_y", "radius") == data.factor_names
    assert class_counts == (FACTOR_BINS,) * 3
    assert train_targets.shape == (300, 3) and test_targets.shape == (100, 3)
    assert torch.equal(train_targets, factor_classes(data.train.factors, data.train.factors))
    assert torch.equal(test_targets, factor_classes(data.test.factors, data.train.factors))
    for column in range(3):  # each head sees its own factor: bins rise with it
        order = data.train.factors[:, column].argsort()
        assert (train_targets[order, column].diff() >= 0).all()
        assert set(train_targets[:, column].tolist()) == set(range(FACTOR_BINS))


def test_labelled_data_supervise_one_head_over_the_classes():
    data = load_dataset("digits")
    train_targets, test_targets, class_counts, heads = training_targets(data)
    assert torch.equal(train_targets, data.train.labels)
    assert torch.equal(test_targets, data.test.labels)
    assert (class_counts, heads) == ((10,), ("class",))


def test_the_circles_net_is_trained_and_scored_on_all_three_factors(tmp_path, monkeypatch):
    """feature_net_for passes every factor's bins to the training, with dynamic binarisation,
    and reports a test accuracy per factor, the lowest as `test_accuracy`."""
    trained = []
    train = features.samples.train_feature_net

    def recording_train(images, labels, num_classes, **settings):
        trained.append((labels.clone(), num_classes, settings))
        return train(images, labels, num_classes, **{**settings, "epochs": 2})

    monkeypatch.setattr(features.samples, "train_feature_net", recording_train)
    data = load_dataset("circles", SMALL_CIRCLES)
    net, info = feature_net_for(data, data.fingerprint(), tmp_path, "cpu")
    ((labels, class_counts, settings),) = trained
    assert labels.shape == (300, 3) and class_counts == (FACTOR_BINS,) * 3
    assert settings["binarize"] is True and settings["seed"] == features.FEATURE_SEED
    assert net.class_counts == (FACTOR_BINS,) * 3
    assert list(info["test_accuracies"]) == ["centre_x", "centre_y", "radius"]
    assert info["heads"] == ["centre_x", "centre_y", "radius"]
    assert info["test_accuracy"] == min(info["test_accuracies"].values())
    assert info["num_classes"] == [FACTOR_BINS] * 3 and info["binarize"] is True


def test_grey_data_train_the_net_on_grey_levels(tmp_path, monkeypatch):
    settings = []
    train = features.samples.train_feature_net

    def recording_train(images, labels, num_classes, **options):
        settings.append(options)
        return train(images, labels, num_classes, **{**options, "epochs": 1})

    monkeypatch.setattr(features.samples, "train_feature_net", recording_train)
    data = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "none"})
    feature_net_for(data, data.fingerprint(), tmp_path, "cpu")
    assert settings[0]["binarize"] is False


# --- the minimum accuracy -----------------------------------------------------------------------


def test_every_dataset_has_a_minimum_accuracy():
    from vae_zoo.data import DATASETS

    assert set(MIN_TEST_ACCURACY) == set(DATASETS)
    # Above the chance of five bins (0.2): sprites' orientation head is ambiguous by design.
    assert all(0.2 < floor.minimum < 1 for floor in MIN_TEST_ACCURACY.values())


def made(name: str, train_images: int, **options) -> ImageData:
    split = Split(torch.zeros(train_images, 1, 2, 2, dtype=torch.uint8))
    return ImageData(name, train=split, val=split, test=split, binarize="dynamic",
                     options=options)


@pytest.mark.parametrize("data, expected", [
    (made("circles", 8000), MIN_TEST_ACCURACY["circles"].minimum),  # options as the defaults
    (made("circles", 20000, side=28, binarize="dynamic", train_size=20000),  # more images
     MIN_TEST_ACCURACY["circles"].minimum),
    (made("circles", 7999), None),  # fewer training images than measured with
    (made("circles", 8000, side=16), None),  # other-looking images
    (made("circles", 8000, binarize="none"), None),
    (made("digits", 1300, binarize="dynamic", data_seed=3), MIN_TEST_ACCURACY["digits"].minimum),
    (made("my-own-data", 10**6), None),  # no minimum measured
])
def test_a_minimum_applies_to_data_that_look_as_measured_with_as_many_images(data, expected):
    assert required_accuracy(data) == expected


def test_a_net_below_the_minimum_is_refused_with_what_to_do():
    info = {"key": "circles-abc-v2-cpu",
            "test_accuracies": {"centre_x": 0.97, "centre_y": 0.71, "radius": 0.9}}
    with pytest.raises(FeatureNetTooWeak) as refusal:
        check_accuracy("circles", info, 0.88)
    message = str(refusal.value)
    assert isinstance(refusal.value, UserError)
    assert "dataset 'circles'" in message and "centre_y 0.7100" in message
    assert "centre_x" not in message and "radius" not in message  # only the weak heads
    assert "minimum of 0.88" in message and "circles-abc-v2-cpu" in message
    assert "train it better" in message and "set their minimum" in message
    check_accuracy("circles", info, 0.71)  # the minimum itself passes
    check_accuracy("circles", info, None)  # no minimum: nothing to check


def test_a_digits_net_trained_too_briefly_is_refused_fresh_and_from_the_cache(
        tmp_path, monkeypatch):
    """The digits at their default options are held to their minimum: a net trained for one
    epoch falls short; it is cached all the same (retraining would give the same net), and
    loading it is refused again without training."""
    monkeypatch.setattr(features.samples, "default_epochs", lambda images, batch_size: 1)
    data = load_dataset("digits")
    minimum = MIN_TEST_ACCURACY["digits"].minimum
    assert required_accuracy(data) == minimum
    with pytest.raises(FeatureNetTooWeak, match=f"dataset 'digits'.*minimum of {minimum}"):
        feature_net_for(data, data.fingerprint(), tmp_path, "cpu")
    (cached,) = (tmp_path / "features").glob("*.json")
    assert json.loads(cached.read_text())["test_accuracy"] < minimum
    monkeypatch.setattr(features.samples, "train_feature_net", no_training)
    with pytest.raises(FeatureNetTooWeak):
        feature_net_for(data, data.fingerprint(), tmp_path, "cpu")


def test_a_net_at_or_above_the_minimum_is_returned(tmp_path, monkeypatch):
    monkeypatch.setattr(features.samples, "default_epochs", lambda images, batch_size: 1)
    monkeypatch.setitem(MIN_TEST_ACCURACY, "digits", AccuracyFloor(0.05, 1300))
    data = load_dataset("digits")
    net, info = feature_net_for(data, data.fingerprint(), tmp_path, "cpu")
    assert info["test_accuracy"] >= 0.05 and not net.training


# --- the cache ----------------------------------------------------------------------------------


def test_the_cache_key_names_the_dataset_its_fingerprint_the_net_version_and_device(
        tmp_path, monkeypatch):
    """An older architecture's cached net (no version in its key, or another version) is not
    loaded: the key holds FEATURE_NET_VERSION."""
    train = features.samples.train_feature_net
    monkeypatch.setattr(features.samples, "train_feature_net",
                        lambda *args, **settings: train(*args, **{**settings, "epochs": 1}))
    data = load_dataset("circles", SMALL_CIRCLES)
    fingerprint = data.fingerprint()
    cache = tmp_path / "features"
    cache.mkdir()
    for stale in (f"circles-{fingerprint}-cpu", f"circles-{fingerprint}-v1-cpu"):
        (cache / f"{stale}.pt").write_bytes(b"an older feature net")
    _, info = feature_net_for(data, fingerprint, tmp_path, "cpu")
    key = f"circles-{fingerprint}-v{FEATURE_NET_VERSION}-cpu"
    assert FEATURE_NET_VERSION == 2
    assert info["key"] == key and not info["loaded_from_cache"]
    assert (cache / f"{key}.pt").exists() and (cache / f"{key}.json").exists()
    monkeypatch.setattr(features.samples, "train_feature_net", no_training)
    _, again = feature_net_for(data, fingerprint, tmp_path, "cpu")
    assert again["loaded_from_cache"]


def test_feature_net_cache_is_written_once_and_then_loaded(tmp_path, monkeypatch):
    train_images, train_labels = half_bright_images(512, seed=0)
    test_images, test_labels = half_bright_images(256, seed=10)
    arguments = (tmp_path, "halves-abc123", train_images, train_labels, test_images, test_labels, 2)

    trained, info = load_or_train_feature_net(*arguments, epochs=5)
    assert not info["loaded_from_cache"] and not trained.training
    stored = json.loads((tmp_path / "halves-abc123.json").read_text())
    assert stored["test_accuracy"] == info["test_accuracy"] > 0.9
    assert stored["test_accuracies"] == {"class": stored["test_accuracy"]}
    assert stored["key"] == "halves-abc123" and stored["num_classes"] == [2]
    assert stored["num_features"] == 64 and stored["seed"] == 0 and stored["train_images"] == 512
    assert stored["version"] == FEATURE_NET_VERSION and stored["binarize"] is False
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "halves-abc123.json",
        "halves-abc123.pt",
    ]

    monkeypatch.setattr(features.samples, "train_feature_net", no_training)
    loaded, loaded_info = load_or_train_feature_net(*arguments)
    assert loaded_info["loaded_from_cache"] and not loaded.training
    assert {**loaded_info, "loaded_from_cache": False} == info
    assert torch.equal(
        extract_features(loaded, test_images), extract_features(trained, test_images)
    )
    with pytest.raises(ValueError, match=r"class_counts=\(2,\), but the data has \(3,\)"):
        load_or_train_feature_net(*arguments[:-1], 3)
    with pytest.raises(ValueError, match="in_channels=1, but the data has 3"):
        load_or_train_feature_net(tmp_path, "halves-abc123", train_images.expand(-1, 3, -1, -1),
                                  *arguments[3:])


def test_several_heads_are_named_and_scored_one_by_one(tmp_path):
    """Unnamed heads are `head0`, `head1`, ...; train and test accuracy per head, the lowest
    as `test_accuracy` / `train_accuracy`."""
    train_images, halves = half_bright_images(256, seed=0)
    test_images, test_halves = half_bright_images(128, seed=10)
    both = torch.stack([halves, 1 - halves], dim=1)
    test_both = torch.stack([test_halves, 1 - test_halves], dim=1)
    _, info = load_or_train_feature_net(tmp_path, "two", train_images, both, test_images,
                                        test_both, (2, 2), epochs=3)
    assert list(info["test_accuracies"]) == list(info["train_accuracies"]) == ["head0", "head1"]
    assert info["test_accuracy"] == min(info["test_accuracies"].values())
    assert info["train_accuracy"] == min(info["train_accuracies"].values())
    assert info["heads"] == ["head0", "head1"] and info["num_classes"] == [2, 2]


def test_a_binarising_net_is_scored_on_one_fixed_draw_of_its_training_images(
        tmp_path, monkeypatch):
    """`binarize=True` trains on fresh draws, and the training accuracy is measured on one
    draw made with the seed (binary images, as the test images are)."""
    scored = []
    accuracy = features.classifier_accuracy

    def recording_accuracy(net, images, labels):
        scored.append(images.clone())
        return accuracy(net, images, labels)

    monkeypatch.setattr(features, "classifier_accuracy", recording_accuracy)
    images, labels = half_bright_images(64, seed=0)
    _, info = load_or_train_feature_net(tmp_path, "binary", images, labels,
                                        images[:16].round(), labels[:16], 2, epochs=1,
                                        binarize=True, seed=4)
    test_seen, train_seen = scored
    assert set(train_seen.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(train_seen, torch.bernoulli(
        images, generator=torch.Generator().manual_seed(4)))
    assert info["binarize"] is True
