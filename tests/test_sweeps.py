"""Sweeps: a list of values in a [model.NAME] table makes one named variant per value."""

from pathlib import Path

import pytest

from vae_zoo.errors import UserError
from vae_zoo.harness.suite import parse_suite
from vae_zoo.harness.sweeps import expand_sweeps, format_value, slug

MLP_LISTS = ("hidden",)  # the list-valued hyper-parameters of the MLP entries


def names(variants):
    return [name for name, _, _ in variants]


def test_a_list_of_values_makes_one_variant_per_value_named_after_it():
    variants = expand_sweeps("beta-vae", {"beta": [1, 2, 4, 8, 16], "k": 1}, MLP_LISTS)
    assert names(variants) == [f"beta-vae[beta={b}]" for b in (1, 2, 4, 8, 16)]
    assert [overrides for _, overrides, _ in variants] == [{"beta": b, "k": 1}
                                                          for b in (1, 2, 4, 8, 16)]
    assert [swept for _, _, swept in variants] == [{"beta": b} for b in (1, 2, 4, 8, 16)]


def test_a_table_without_a_list_is_one_model_under_its_own_name():
    assert expand_sweeps("iwae-k50", {"entry": "iwae", "k": 50}, MLP_LISTS) == [
        ("iwae-k50", {"entry": "iwae", "k": 50}, {})
    ]


def test_two_swept_keys_give_their_product_first_key_outermost_in_table_order():
    table = {"k": [1, 5], "latent_dim": 10, "beta": [0.5, 2.0, 4]}
    variants = expand_sweeps("beta-vae", table, MLP_LISTS)
    assert len(variants) == 6
    assert names(variants) == [
        "beta-vae[k=1,beta=0.5]", "beta-vae[k=1,beta=2.0]", "beta-vae[k=1,beta=4]",
        "beta-vae[k=5,beta=0.5]", "beta-vae[k=5,beta=2.0]", "beta-vae[k=5,beta=4]",
    ]
    assert all(overrides["latent_dim"] == 10 for _, overrides, _ in variants)
    assert variants[4][2] == {"k": 5, "beta": 2.0}


def test_a_list_valued_hyperparameter_is_swept_by_a_list_of_lists():
    variants = expand_sweeps("mlp-vae", {"hidden": [[100], [200, 200]]}, MLP_LISTS)
    assert names(variants) == ["mlp-vae[hidden=100]", "mlp-vae[hidden=200x200]"]
    assert [overrides["hidden"] for _, overrides, _ in variants] == [[100], [200, 200]]


def test_a_plain_list_for_a_list_valued_hyperparameter_is_one_value():
    assert expand_sweeps("mlp-vae", {"hidden": [300, 300]}, MLP_LISTS) == [
        ("mlp-vae", {"hidden": [300, 300]}, {})
    ]
    # The same key is an integer in another entry (conv-vae's `hidden`): there a list sweeps it.
    assert names(expand_sweeps("conv-vae", {"hidden": [64, 128]}, ("channels",))) == [
        "conv-vae[hidden=64]", "conv-vae[hidden=128]"
    ]


@pytest.mark.parametrize("value, text", [
    (4, "4"), (4.0, "4.0"), (0.5, "0.5"), (1e-5, "1e-05"), ("relu", "relu"),
    (True, "true"), (False, "false"), ([100, 100], "100x100"),
])
def test_values_are_named_as_the_user_wrote_them(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize("key, value, says", [
    ("beta", [], "is an empty list"),
    ("hidden", [], "is an empty list"),
    ("hidden", [100, [200]], "a sweep of it is a list of lists"),
    ("beta", [1, "a"], "mixes numbers and strings"),
    ("beta", [1, True], "mixes numbers and booleans"),
    ("beta", [2, 4, 2], "repeats 2"),
    ("beta", [1, 1.0], "repeats"),
    ("hidden", [[100], [100]], "repeats 100"),
    ("beta", [[1, 2]], "nests a list"),
    ("beta", [1, [2]], "nests a list"),
])
def test_a_bad_sweep_is_refused_naming_the_table_the_key_and_the_fix(key, value, says):
    with pytest.raises(UserError) as caught:
        expand_sweeps("mlp-vae", {key: value}, MLP_LISTS)
    message = str(caught.value)
    assert message.startswith(f"[model.mlp-vae] {key} = ") and says in message


def test_ints_and_floats_may_share_a_sweep():
    assert names(expand_sweeps("beta-vae", {"beta": [1, 2.5]}, MLP_LISTS)) == [
        "beta-vae[beta=1]", "beta-vae[beta=2.5]"
    ]


def test_the_entry_cannot_be_swept():
    with pytest.raises(UserError, match=r"\[model.mine\] entry = .*cannot be swept"):
        expand_sweeps("mine", {"entry": ["mlp-vae", "iwae"]}, MLP_LISTS)


@pytest.mark.parametrize("name, expected", [
    ("beta-vae[beta=1,k=5]", "beta-vae_beta=1_k=5"),
    ("mlp-vae[hidden=100x100]", "mlp-vae_hidden=100x100"),
    ("beta-vae[beta=0.5]", "beta-vae_beta=0.5"),
    ("beta-vae[beta=1e+20]", "beta-vae_beta=1e20"),
    ("mlp-vae[latent_dim=3,activation=relu]", "mlp-vae_latent_dim=3_activation=relu"),
    ("iwae-k50", "iwae-k50"),
])
def test_slug_is_a_directory_safe_form_of_a_variant_name(name, expected):
    assert slug(name) == expected


def test_slug_tells_apart_every_variant_a_sweep_can_name():
    tables = [
        ("beta-vae", {"beta": [1, 1.5, 2.0, 1e-5, 1e20], "k": [1, 5, 50]}),
        ("mlp-vae", {"hidden": [[100], [100, 100], [1001], [10, 1]], "latent_dim": [1, 10]}),
        ("mlp-vae", {"activation": ["tanh", "relu"], "gaussian_scale": [0.1, 1]}),
    ]
    generated = {"beta-vae", "mlp-vae", "iwae", "conv-vae"}
    for name, table in tables:
        generated |= set(names(expand_sweeps(name, table, MLP_LISTS)))
    slugs = {slug(name) for name in generated}
    assert len(slugs) == len(generated)
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._=-")
               for s in slugs)


def suite(models: list[str], model_tables: dict) -> dict:
    return {"datasets": ["circles"], "models": models, "seeds": [0, 1], "model": model_tables}


def test_a_parsed_suite_holds_the_variants_in_order_with_their_origin_and_values():
    table = suite(["mlp-vae", "beta-vae"], {
        "mlp-vae": {"hidden": [[100], [200, 200]]},
        "beta-vae": {"beta": [1, 4], "latent_dim": 8},
    })
    parsed = parse_suite(table, Path("x.toml"))
    assert [m.name for m in parsed.models] == [
        "mlp-vae[hidden=100]", "mlp-vae[hidden=200x200]", "beta-vae[beta=1]", "beta-vae[beta=4]",
    ]
    assert [m.variant_of for m in parsed.models] == ["mlp-vae"] * 2 + ["beta-vae"] * 2
    assert [m.sweep for m in parsed.models] == [
        {"hidden": [100]}, {"hidden": [200, 200]}, {"beta": 1.0}, {"beta": 4.0},
    ]
    beta4 = parsed.models[3]
    assert beta4.entry == "beta-vae" and beta4.hyperparameters["beta"] == 4.0
    assert beta4.hyperparameters["latent_dim"] == 8
    assert len(parsed.cells()) == 4 * 2


def test_a_model_without_a_sweep_is_its_own_variant():
    parsed = parse_suite(suite(["iwae-k50"], {"iwae-k50": {"entry": "iwae", "k": 50}}),
                         Path("x.toml"))
    (model,) = parsed.models
    assert (model.name, model.variant_of, model.sweep) == ("iwae-k50", "iwae-k50", {})


def test_each_swept_value_is_checked_like_any_hyperparameter():
    with pytest.raises(UserError) as caught:
        parse_suite(suite(["beta-vae"], {"beta-vae": {"beta": [1, -2]}}), Path("x.toml"))
    message = str(caught.value)
    assert message.startswith("[model.beta-vae]") and "'beta' = -2" in message
    assert "beta-vae[beta=-2]" in message


def test_a_variant_named_like_another_model_is_refused():
    table = suite(["beta-vae", "beta-vae[beta=1]"], {
        "beta-vae": {"beta": [1, 2]},
        "beta-vae[beta=1]": {"entry": "beta-vae", "latent_dim": 4},
    })
    with pytest.raises(UserError, match=r"\[model.beta-vae\] sweeps into 'beta-vae\[beta=1\]'"):
        parse_suite(table, Path("x.toml"))


def test_a_swept_table_must_still_name_a_model_in_models():
    with pytest.raises(UserError, match=r"\[model.iwae\] configures a model that is not in"):
        parse_suite(suite(["mlp-vae"], {"iwae": {"k": [1, 5]}}), Path("x.toml"))


def test_a_swept_entry_in_a_suite_is_refused_naming_the_table():
    with pytest.raises(UserError, match=r"\[model.mine\] entry = .*cannot be swept"):
        parse_suite(suite(["mine"], {"mine": {"entry": ["mlp-vae", "iwae"]}}), Path("x.toml"))
