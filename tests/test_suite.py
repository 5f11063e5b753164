"""Suite files: the shipped ones parse; bad ones are refused with a message naming the key."""

import pytest

from vae_zoo.errors import UserError
from vae_zoo.harness.suite import available_suites, load_suite
from vae_zoo.zoo import ZOO

VALID = """
datasets = ["circles"]
models = ["mlp-vae", "iwae-k50"]
seeds = [0, 1]
[train]
epochs = 2
[eval]
nll_samples = 10
[dataset.circles]
side = 8
[model.mlp-vae]
latent_dim = 3
[model.iwae-k50]
entry = "iwae"
k = 50
"""


def write(tmp_path, text):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return str(path)


def test_shipped_suites_parse():
    assert {"smoke", "default"} <= set(available_suites())
    smoke, default = load_suite("smoke"), load_suite("default")
    assert [m.name for m in smoke.models] == list(ZOO)
    assert list(smoke.datasets) == ["circles", "digits"] and smoke.seeds == [0]
    assert len(smoke.cells()) == 2 * len(ZOO) >= 2 * 18
    assert list(default.datasets) == ["fashion-mnist", "circles"] and default.seeds == [0, 1, 2]
    assert default.eval.nll_samples >= 1000


def test_a_suite_resolves_into_cells_with_overrides_and_variants(tmp_path):
    suite = load_suite(write(tmp_path, VALID))
    assert suite.name == "mine"
    cells = suite.cells()
    assert len(cells) == 4
    variant = next(cell.model for cell in cells if cell.model.name == "iwae-k50")
    assert variant.entry == "iwae" and variant.hyperparameters["k"] == 50
    assert cells[0].model.hyperparameters["latent_dim"] == 3
    assert cells[0].dataset_options["side"] == 8
    assert cells[0].train.epochs == 2 and cells[0].eval.nll_samples == 10


@pytest.mark.parametrize("change, message", [
    (("epochs = 2", "epoch = 2"), "unknown key 'epoch' in [train]; valid keys: epochs"),
    (("epochs = 2", "epochs = \"two\""), "[train] epochs = 'two'; expected a positive integer"),
    (('datasets = ["circles"]', 'datasets = ["cifar"]'), "unknown dataset 'cifar'; valid"),
    (('"mlp-vae", "iwae-k50"', '"mlp-vea", "iwae-k50"'), "unknown model 'mlp-vea'"),
    (("latent_dim = 3", "latent_dims = 3"), "[model.mlp-vae] model 'mlp-vae': hyper-parameter "
                                            "'latent_dims' is unknown"),
    (("side = 8", "sides = 8"), "unknown key 'sides' in [dataset.circles]"),
    (("seeds = [0, 1]", "seeds = [0, 0]"), "repeats a seed"),
    (('entry = "iwae"', 'entry = "iwea"'), "unknown model 'iwea'"),
    (("seeds = [0, 1]", "seeds = [0, 1]\ncolour = 3"), "unknown key 'colour' in suite"),
    (("latent_dim = 3", 'latent_dim = 3\nlikelihood = "gaussian"'),
     "model 'mlp-vae' on dataset 'circles' (binarize = \"dynamic\"): Gaussian is a density on "
     "[0, 1] and these pixels are binary"),
    (("side = 8", 'side = 8\nbinarize = "none"'),
     "the Bernoulli likelihood needs binary pixels, and these are grey levels"),
    (("epochs = 2", 'select = "best"'), "[train] select = 'best'; expected one of objective, "
                                        "elbo, last"),
    (("epochs = 2", "max_epochs = 20"), "[train] max_epochs is the budget of early stopping; "
                                        "set 'patience'"),
    (("epochs = 2", "epochs = 2\nmax_epochs = 20\npatience = 3"),
     "[train] sets both 'epochs' and 'max_epochs'"),
    (("nll_samples = 10", 'likelihood = ["is", "hmc"]'),
     "[eval] likelihood = ['is', 'hmc']; expected a list of distinct values among is, ais"),
    (("nll_samples = 10", 'likelihood = ["ais"]'),
     "[eval] likelihood = ['ais'] leaves out \"is\""),
    (("nll_samples = 10", 'ais_start = "data"'), "[eval] ais_start = 'data'; expected one of"),
    (("seeds = [0, 1]", 'seeds = [0, 1]\n[report]\nbaseline = "vae"'),
     "[report] baseline = 'vae' is not one of the suite's models: mlp-vae, iwae-k50"),
    (("seeds = [0, 1]", 'seeds = [0, 1]\n[report]\nbase = "mlp-vae"'),
     "unknown key 'base' in [report]"),
])
def test_bad_suites_are_refused_with_the_key_and_choices(tmp_path, change, message):
    with pytest.raises(UserError) as caught:
        load_suite(write(tmp_path, VALID.replace(*change)))
    assert message in str(caught.value)


def test_training_selection_early_stopping_estimators_and_baseline_are_read(tmp_path):
    text = VALID.replace("epochs = 2", 'max_epochs = 30\npatience = 4\nselect = "last"').replace(
        "nll_samples = 10", 'nll_samples = 10\nlikelihood = ["is", "ais"]\nais_steps = 50\n'
        'bdmc_images = 8').replace("seeds = [0, 1]", 'seeds = [0, 1]\n[report]\n'
                                   'baseline = "mlp-vae"')
    suite = load_suite(write(tmp_path, text))
    assert (suite.train.epochs, suite.train.patience, suite.train.select) == (30, 4, "last")
    assert suite.eval.likelihood == ("is", "ais") and suite.eval.ais_steps == 50
    assert suite.eval.bdmc_images == 8 and suite.baseline == "mlp-vae"
    defaults = load_suite(write(tmp_path, VALID))
    assert (defaults.train.select, defaults.train.patience, defaults.baseline) == (
        "objective", 0, None)
    assert defaults.eval.likelihood == ("is",)


def test_a_likelihood_that_fits_the_data_is_accepted(tmp_path):
    grey = VALID.replace("side = 8", 'side = 8\nbinarize = "none"').replace(
        'models = ["mlp-vae", "iwae-k50"]', 'models = ["mlp-vae"]').replace(
        "latent_dim = 3", 'latent_dim = 3\nlikelihood = "discretised-logistic"')
    grey = grey[:grey.index("[model.iwae-k50]")]
    suite = load_suite(write(tmp_path, grey))
    assert suite.models[0].hyperparameters["likelihood"] == "discretised-logistic"
    dequantised = grey.replace('"discretised-logistic"', '"continuous-bernoulli"')
    assert load_suite(write(tmp_path, dequantised)).models[0].hyperparameters["dequantize"]
    with pytest.raises(UserError, match="without dequantisation on 8-bit pixels"):
        load_suite(write(tmp_path, dequantised + "dequantize = false\n"))


def test_models_all_means_every_zoo_entry(tmp_path):
    suite = load_suite(write(tmp_path, 'datasets = ["circles"]\nmodels = "all"\nseeds = [0]\n'))
    assert [model.name for model in suite.models] == list(ZOO)


def test_unknown_suite_lists_the_available_ones():
    with pytest.raises(UserError, match="available suites: .*smoke"):
        load_suite("no-such-suite")


def test_paper_iwae_suite_follows_the_paper():
    suite = load_suite("paper-iwae")
    assert list(suite.datasets) == ["mnist"] and suite.datasets["mnist"]["binarize"] == "dynamic"
    ks = {m.name: (m.entry, m.hyperparameters["k"]) for m in suite.models}
    assert ks == {f"{kind}-k{k}": ("mlp-vae" if kind == "vae" else "iwae", k)
                  for kind in ("vae", "iwae") for k in (1, 5, 50)}
    assert all(m.hyperparameters["hidden"] == [200, 200] and m.hyperparameters["latent_dim"] == 50
               for m in suite.models)
    assert suite.train.lr_schedule == "iwae-paper" and suite.train.epochs == 3280
    assert suite.train.select == "last"  # the paper did no early stopping
    assert suite.eval.nll_samples == 5000
    assert suite.references["mnist"]["iwae-k50"]["test_nll"] == 84.78
    assert suite.slurm.gpus_per_node == 1


def test_the_readme_example_suite_is_valid(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("```toml") + len("```toml")
    example = readme[start:readme.index("```", start)]
    suite = load_suite(write(tmp_path, example))
    assert len(suite.cells()) == 2 * 3 * 2
    assert suite.references["circles"]["iwae-k50"]["test_nll"] == 40.0


def test_the_readme_sweep_example_expands_as_it_says(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Sweeps"):]
    start = section.index("```toml") + len("```toml")
    example = section[start:section.index("```", start)]
    suite = load_suite(write(tmp_path, 'datasets = ["circles"]\nseeds = [0]\n' + example))
    names = [m.name for m in suite.models]
    assert names[:5] == [f"beta-vae[beta={b}]" for b in (1, 2, 4, 8, 16)]
    assert names[5:] == [f"mlp-vae[k={k},latent_dim={d},hidden={h}]"
                         for k in (1, 5) for d in (10, 50) for h in ("100", "200x200")]
    assert {m.variant_of for m in suite.models} == {"beta-vae", "mlp-vae"}


def test_a_suite_with_a_sweep_has_one_cell_per_variant_dataset_and_seed(tmp_path):
    suite = load_suite(write(tmp_path, VALID.replace("latent_dim = 3", "latent_dim = [3, 4]")))
    assert [m.name for m in suite.models] == ["mlp-vae[latent_dim=3]", "mlp-vae[latent_dim=4]",
                                              "iwae-k50"]
    assert len(suite.cells()) == 3 * 2
    assert [cell.model.hyperparameters["latent_dim"] for cell in suite.cells()[:4]] == [3, 3, 4, 4]
