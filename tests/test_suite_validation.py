"""Every input of a suite is checked before anything runs: names, types, ranges, finiteness,
dataset sizes, evaluation needs and model sizes. A bad suite is one `UserError` naming the key
and what it accepts; through the CLI, exit status 2, no traceback and nothing written."""

import os
import re
from pathlib import Path

import pytest

import vae_zoo.data
from vae_zoo.cli import main
from vae_zoo.errors import UserError
from vae_zoo.harness import suite as suite_module
from vae_zoo.harness.suite import MAX_RUN_NAME, available_suites, load_suite
from vae_zoo.harness.sweeps import slug

BASE = """
datasets = ["circles"]
models = ["mlp-vae"]
seeds = [0]
[train]
epochs = 1
[eval]
nll_samples = 10
[dataset.circles]
side = 12
train_size = 200
val_size = 50
test_size = 50
"""
MEMORY = 16 * 2**30
SUITE_RULE = "names use only ASCII letters, digits, '.', '-' and '_'"
MODEL_RULE = "names use only ASCII letters, digits, '.' and '-'"


@pytest.fixture(autouse=True)
def sixteen_gib(monkeypatch):
    """Memory limits measured against a machine of 16 GiB, whatever this one has."""
    monkeypatch.setattr(suite_module, "machine_memory", lambda: MEMORY)
    monkeypatch.setattr(vae_zoo.data, "machine_memory", lambda: MEMORY)


def write(tmp_path: Path, text: str, name: str = "mine.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def refused(tmp_path: Path, text: str, *parts: str) -> str:
    """Load `text` as a suite, expect a UserError containing every part; its message."""
    with pytest.raises(UserError) as caught:
        load_suite(write(tmp_path, text))
    message = str(caught.value)
    for part in parts:
        assert part in message, message
    return message


def with_table(header: str, body: str) -> str:
    """BASE with `body` added to its table `header` (a new table when it has none), replacing
    BASE's lines of the same keys; for a `[model.NAME]` table, NAME is the suite's model."""
    text = BASE
    for line in body.splitlines():
        text = re.sub(rf"^{re.escape(line.split(' =')[0])} = .*\n", "", text, flags=re.M)
    if header in text:
        return text.replace(header, f"{header}\n{body}")
    if header.startswith("[model."):
        text = text.replace('"mlp-vae"', f'"{header[len("[model."):-1]}"')
    return f"{text}\n{header}\n{body}\n"


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escaped_suite", "/tmp/absolute", "a/b", "a\\\\b", "",
                                  ".", "..", ".hidden", "_cache", "with space", "é", "a" * 65,
                                  "tab\\t"])
def test_a_suite_name_outside_the_safe_set_is_refused_with_the_set(tmp_path, name):
    refused(tmp_path, f'name = "{name}"\n' + BASE, "name = ", SUITE_RULE,
            "starting with a letter or digit, at most 64 characters")


def test_a_safe_suite_name_is_kept_and_a_non_string_is_refused(tmp_path):
    assert load_suite(write(tmp_path, 'name = "my_suite-2.0"\n' + BASE)).name == "my_suite-2.0"
    refused(tmp_path, "name = 3\n" + BASE, "name = 3 is not allowed", SUITE_RULE)


def test_a_suite_named_after_an_unsafe_file_name_says_how_to_fix_it(tmp_path):
    with pytest.raises(UserError, match="rename the file or set name"):
        load_suite(write(tmp_path, BASE, "two words.toml"))


@pytest.mark.parametrize("name", ["a/b", "..", ".x", "_x", "a_b", "a b", "é", "a" * 65, "x[k=1]"])
def test_a_model_name_outside_the_safe_set_is_refused_with_the_set(tmp_path, name):
    text = BASE.replace('models = ["mlp-vae"]', f'models = ["mlp-vae", "{name}"]')
    refused(tmp_path, text + f'[model."{name}"]\nentry = "iwae"\n', "model name ", MODEL_RULE)
    # Without a table, the name is refused before it is looked up in the zoo.
    refused(tmp_path, text, "model name ", MODEL_RULE)


def test_a_table_for_a_model_not_in_models_is_refused_with_its_name_checked(tmp_path):
    refused(tmp_path, BASE + '[model."../x"]\nk = 1\n', "model name '../x'", MODEL_RULE)
    refused(tmp_path, BASE + "[model.iwae]\nk = 1\n", "[model.iwae] configures a model that "
                                                      "is not in 'models'")


def test_model_names_differing_only_in_case_are_refused(tmp_path):
    text = BASE.replace('models = ["mlp-vae"]', 'models = ["Mine", "mine"]')
    text += '[model.Mine]\nentry = "mlp-vae"\n[model.mine]\nentry = "iwae"\n'
    refused(tmp_path, text, "models 'Mine' and 'mine' would share run directories")


def test_every_swept_name_has_its_own_safe_run_directory_name(tmp_path):
    text = BASE.replace('"mlp-vae"', '"mlp-vae", "beta-vae"') + (
        "[model.mlp-vae]\nhidden = [[8], [8, 8]]\nlatent_dim = [2, 3]\n"
        'prior = ["vamp", "mog"]\n[model.beta-vae]\nbeta = [0.5, 1e-05, 2]\n')
    names = [model.name for model in load_suite(write(tmp_path, text)).models]
    assert len(names) == 8 + 3 and "mlp-vae[hidden=8x8,latent_dim=3,prior=mog]" in names
    slugs = [slug(name) for name in names]
    assert len({s.lower() for s in slugs}) == len(slugs)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._=-]*", s) for s in slugs)


def test_a_sweep_into_too_many_or_too_long_names_is_refused(tmp_path):
    refused(tmp_path, BASE + f"[model.mlp-vae]\nk = {list(range(1, 41))}\n"
                             f"latent_dim = {list(range(1, 41))}\n",
            "40 (k) x 40 (latent_dim) = 1,600 variants; at most 1,000")
    widths = [[10000 + i] * 32 for i in range(2)]
    refused(tmp_path, BASE + f"[model.mlp-vae]\nhidden = {widths}\n",
            f"at most {MAX_RUN_NAME}: sweep fewer keys or shorter values")


def test_reference_metric_names_are_checked(tmp_path):
    refused(tmp_path, BASE + '[reference.circles.mlp-vae]\n"test nll" = 1.0\n',
            "metric 'test nll' is not allowed", "ASCII letters, digits and '_'")


def test_a_project_name_outside_the_safe_set_is_refused(tmp_path):
    refused(tmp_path, 'project = "a/b"\n' + BASE, "project = 'a/b'", SUITE_RULE)


# --- the file itself ---------------------------------------------------------------------------


def test_a_file_that_is_not_utf8_is_refused_with_the_line(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(BASE.encode() + b'description = "caf\xe9"\n')
    line = BASE.count("\n") + 1
    with pytest.raises(UserError, match=rf"not UTF-8 text \(byte 0xe9 on line {line}\)"):
        load_suite(str(path))


def test_a_folder_is_not_a_suite(tmp_path):
    (tmp_path / "folder.toml").mkdir()
    for given in (tmp_path / "folder.toml", tmp_path):
        with pytest.raises(UserError, match="is a folder; give a suite name or the path"):
            load_suite(str(given))


def test_an_unreadable_file_is_refused(tmp_path, monkeypatch):
    path = write(tmp_path, BASE)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(UserError, match="cannot be read: Permission denied"):
        load_suite(path)


def test_an_oversized_or_too_deeply_nested_file_is_refused(tmp_path):
    refused(tmp_path, BASE + "# " + "x" * 2**20 + "\n", "too large for a suite file")
    refused(tmp_path, BASE + "[model.mlp-vae]\nhidden = " + "[" * 5000 + "]" * 5000 + "\n",
            "nested too deeply")


def test_a_name_the_file_system_cannot_take_is_refused():
    with pytest.raises(UserError, match="cannot be looked up"):
        load_suite("x" * 5000)
    with pytest.raises(UserError, match="unknown suite 'nul\\\\x00byte'"):
        load_suite("nul\0byte")


# --- structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    (('models = ["mlp-vae"]', 'models = "al"'), "'models' = 'al'; expected a non-empty list of "
                                               'names or "all"'),
    (('models = ["mlp-vae"]', 'models = [["mlp-vae"]]'), "'models' = [['mlp-vae']]; expected"),
    (("seeds = [0]", "seeds = [2147483648]"), "expected a non-empty list of integers from 0 "
                                              "to 2147483647"),
    (("seeds = [0]", "seeds = []"), "expected a non-empty list of integers"),
    (("seeds = [0]", "seeds = [0]\ndescription = 3"), "'description' = 3; expected a string"),
    (("seeds = [0]", "seeds = [0]\nreference = 3"), "'reference' = 3; expected tables "
                                                    "[reference.DATASET.MODEL]"),
    (("[train]", "[train.epochs]"), "[train] epochs = {'epochs': 1}; expected a positive "
                                    "integer"),
    (("[dataset.circles]", "[dataset.circles.side]"), "; expected an integer from 0 to "
                                                      "2147483647"),
])
def test_structural_mistakes_are_refused(tmp_path, change, message):
    refused(tmp_path, BASE.replace(*change), message)


def test_a_value_where_a_table_is_expected_is_refused(tmp_path):
    head = 'datasets = ["circles"]\nmodels = ["mlp-vae"]\nseeds = [0]\n'
    for key in ("eval", "train", "slurm", "report", "dataset", "model"):
        refused(tmp_path, f"{head}{key} = 3\n", f"'{key}' must be a table")


def test_references_are_type_checked(tmp_path):
    refused(tmp_path, BASE + "[reference.circles]\nmlp-vae = 5\n",
            "[reference.circles] mlp-vae = 5; expected tables [reference.DATASET.MODEL] of "
            "metric = number")
    refused(tmp_path, BASE + "[reference.digits.mlp-vae]\ntest_nll = 1.0\n",
            "[reference] dataset 'digits' is not one of the suite's datasets: circles")
    refused(tmp_path, BASE + "[reference.circles.iwae]\ntest_nll = 1.0\n",
            "[reference.circles] model 'iwae' is not one of the suite's models: mlp-vae")
    for value in ("nan", "inf", '"40"', "true", "[1.0]"):
        refused(tmp_path, BASE + f"[reference.circles.mlp-vae]\ntest_nll = {value}\n",
                "[reference.circles.mlp-vae] test_nll = ", "expected a finite number")
    suite = load_suite(write(tmp_path, BASE + "[reference.circles.mlp-vae]\ntest_nll = 40\n"))
    assert suite.references == {"circles": {"mlp-vae": {"test_nll": 40}}}


def test_an_entry_given_as_a_list_or_a_table_is_refused(tmp_path):
    refused(tmp_path, BASE + '[model.mlp-vae]\nentry = ["mlp-vae"]\n',
            "entry = ['mlp-vae']: the entry cannot be swept")
    refused(tmp_path, BASE + "[model.mlp-vae]\nentry = {a = 1}\n",
            "expected the name of a zoo model")


def test_a_piece_given_as_a_table_is_refused_and_a_list_of_pieces_is_a_sweep(tmp_path):
    refused(tmp_path, BASE + "[model.mlp-vae]\nprior = {a = 1}\n",
            "prior = {'a': 1}; valid choices: standard-normal, mog, vamp")
    suite = load_suite(write(tmp_path, BASE + '[model.mlp-vae]\nprior = ["vamp", "mog"]\n'))
    assert [model.name for model in suite.models] == ["mlp-vae[prior=vamp]", "mlp-vae[prior=mog]"]


def test_an_estimator_list_nested_in_a_list_is_refused(tmp_path):
    refused(tmp_path, with_table("[eval]", 'likelihood = [["is"]]'),
            "[eval] likelihood = [['is']]; expected a list of distinct values among is, ais")


@pytest.mark.parametrize("body, message", [
    ('partition = "gpu\\n#SBATCH --x"', "expected a non-empty string of at most 256 characters "
                                        "on one line"),
    ('setup = ["module load a\\nrm -rf b"]', "strings without line breaks"),
    ("mem_gb = 100000", "[slurm] mem_gb = 100000; expected a positive integer <= 65536"),
])
def test_slurm_settings_are_checked(tmp_path, body, message):
    refused(tmp_path, with_table("[slurm]", body), message)


# --- dataset options -------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ("train_size = 0", "[dataset.circles] train_size = 0; each split needs at least 1 image"),
    ("val_size = 0", "[dataset.circles] val_size = 0; each split needs at least 1 image"),
    ("test_size = 0", "[dataset.circles] test_size = 0; each split needs at least 1 image"),
    ("side = 0", "[dataset.circles] side = 0; expected an integer from 8 to 256"),
    ("side = 257", "side = 257; expected an integer from 8 to 256"),
    ("side = 12.0", "side = 12.0; expected an integer from 0 to 2147483647"),
    ("train_size = -1", "train_size = -1; expected an integer from 0 to 2147483647"),
    ("data_seed = 2147483648", "data_seed = 2147483648; expected an integer from 0 to"),
    ("train_size = 2000000", "2,000,100 images of 12x12 pixels need 6.4 GiB to render, more "
                             "than 1/4 of this machine's memory (16.0 GiB)"),
])
def test_circles_options_are_checked_against_what_can_be_rendered(tmp_path, change, message):
    key = change.split(" =")[0]
    text = re.sub(rf"{key} = \d+\n", "", BASE).replace("[dataset.circles]",
                                                        f"[dataset.circles]\n{change}")
    refused(tmp_path, text, message)


@pytest.mark.parametrize("options, message", [
    ("side = 30", "[dataset.sprites] side = 30; expected a multiple of 4 from 16 to 128"),
    ("side = 132", "side = 132; expected a multiple of 4 from 16 to 128"),
    ("subsample = 737281", "subsample = 737281; expected 0 (the whole grid) or a number of grid "
                           "points from 1 to 737,280"),
    ("subsample = 100\nval_size = 50\ntest_size = 50",
     "test_size = 50 and val_size = 50 leave no training images of the 100 grid points drawn"),
    ("test_size = 0", "[dataset.sprites] test_size = 0; each split needs at least 1 image"),
    ("side = 128", "737,280 images of 128x128 pixels need 22.5 GiB, more than 1/2 of this "
                   "machine's memory (16.0 GiB); draw fewer with `subsample` or use a smaller "
                   "side"),
])
def test_sprites_options_are_checked_against_the_grid_and_the_memory(tmp_path, options,
                                                                     message):
    text = (BASE.replace('["circles"]', '["circles", "sprites"]')
            + f"\n[dataset.sprites]\n{options}\n")
    refused(tmp_path, text, message)


def test_the_whole_sprites_grid_at_64_pixels_fits_a_16_gib_machine(tmp_path):
    """The `disentanglement` suite's data: 5.6 GiB while the splits are made."""
    text = (BASE.replace('["circles"]', '["circles", "sprites"]')
            + "\n[dataset.sprites]\nside = 64\n")
    assert load_suite(write(tmp_path, text))


def test_digits_options_must_leave_a_training_set(tmp_path):
    text = BASE.replace('["circles"]', '["circles", "digits"]')
    refused(tmp_path, text + "[dataset.digits]\ntest_size = 5000\n",
            "[dataset.digits] test_size = 5000 and val_size = 200 leave no training images: "
            "digits has 1,797 images, so test_size + val_size must be at most 1,796")
    refused(tmp_path, text + "[dataset.digits]\ntest_size = 1597\nval_size = 200\n",
            "must be at most 1,796")
    suite = load_suite(write(tmp_path, text + "[dataset.digits]\ntest_size = 1596\n"
                                              "val_size = 192\n"))
    assert suite.datasets["digits"]["test_size"] == 1596


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_mnist_validation_images_come_from_its_60000_training_images(tmp_path, dataset):
    text = BASE.replace('["circles"]', f'["{dataset}"]').replace("[dataset.circles]",
                                                                 "[dataset.unused]")
    text = text[:text.index("[dataset.unused]")]
    for size in (0, 60000):
        refused(tmp_path, text + f"[dataset.{dataset}]\nval_size = {size}\n",
                f"[dataset.{dataset}] val_size = {size}; expected an integer from 1 to 59,999")
    assert load_suite(write(tmp_path, text + f"[dataset.{dataset}]\nval_size = 59999\n"))


def test_a_dataset_table_for_a_dataset_not_in_the_suite_is_refused(tmp_path):
    refused(tmp_path, BASE + "[dataset.digits]\ntest_size = 10\n",
            "[dataset.digits] configures a dataset that is not in 'datasets' (circles)")


# --- numbers: finite, in range ---------------------------------------------------------------


@pytest.mark.parametrize("table, body, message", [
    ("[train]", "adam_eps = inf", "[train] adam_eps = inf; expected a positive number <= 1.0 "
                                  "(inf and nan are not accepted)"),
    ("[train]", "learning_rate = inf", "[train] learning_rate = inf; expected a positive "
                                       "number <= 1.0"),
    ("[train]", "learning_rate = nan", "learning_rate = nan; expected a positive number"),
    ("[train]", "learning_rate = -inf", "learning_rate = -inf; expected a positive number"),
    ("[train]", "learning_rate = 2.0", "learning_rate = 2.0; expected a positive number <= 1.0"),
    ("[train]", "convergence_tolerance = nan", "convergence_tolerance = nan; expected a "
                                               "positive number <= 1.0"),
    ("[train]", "epochs = 100001", "[train] epochs = 100001; expected a positive integer "
                                   "<= 100000"),
    ("[train]", "patience = 100001", "patience = 100001; expected an integer >= 0 and <= "
                                     "100000"),
    ("[train]", "batch_size = 0", "[train] batch_size = 0; expected a positive integer"),
    ("[model.mlp-vae]", "latent_dim = 1e9", "setting 'latent_dim' = 1000000000.0; expected a "
                                            "positive integer <= 10000"),
    ("[model.mlp-vae]", "latent_dim = 1000000000", "setting 'latent_dim' = 1000000000; "
                                                   "expected a positive integer <= 10000"),
    ("[model.mlp-vae]", "k = 10001", "setting 'k' = 10001; expected a positive integer <= 10000"),
    ("[model.beta-vae]", "beta = inf", "setting 'beta' = inf; expected a number >= 0.0 and <= "
                                       "1000000.0 (inf and nan are not accepted)"),
    ("[model.beta-vae]", "beta = nan", "setting 'beta' = nan; expected a number >= 0.0"),
    ("[model.mlp-vae]", "hidden = " + str([10] * 33), "expected a list of positive integers "
                                                      "<= 100000 (1 to 32 of them)"),
    ("[model.mlp-vae]", 'likelihood = "gaussian"\ngaussian_scale = 1e-300',
     "setting 'gaussian_scale' = 1e-300; expected a positive number or \"learned\" (>= 1e-06 "
     "and <= 1000.0)"),
    ("[model.mlp-vae]", 'objective = "ciwae"\nbeta = 1.5', "setting 'beta' = 1.5; expected a "
                                                           "number >= 0.0 and <= 1.0"),
    ("[model.mlp-vae]", 'objective = "factor-vae"\ndiscriminator_lr = nan',
     "setting 'discriminator_lr' = nan; expected a positive number <= 1.0"),
    ("[eval]", "nll_samples = 1000001", "[eval] nll_samples = 1000001; expected a positive "
                                        "integer <= 1000000"),
    ("[eval]", "fid_samples = 1", "[eval] fid_samples = 1; expected an integer >= 2"),
    ("[eval]", "iwae_ks = [1, 5, 5]", "[eval] iwae_ks = [1, 5, 5]; expected a list of distinct "
                                      "positive integers <= 1000000"),
    ("[eval]", "nll_images = -1", "[eval] nll_images = -1; expected an integer >= 0"),
])
def test_every_number_is_finite_and_in_its_range(tmp_path, table, body, message):
    refused(tmp_path, with_table(table, body), message)


def test_max_epochs_is_named_as_written(tmp_path):
    refused(tmp_path, with_table("[train]", "max_epochs = 0\npatience = 2").replace(
        "epochs = 1\n", "", 1), "[train] max_epochs = 0; expected a positive integer")


# --- evaluation settings against what they need ----------------------------------------------


def test_fid_samples_must_exceed_the_precision_recall_neighbourhood(tmp_path):
    refused(tmp_path, with_table("[eval]", "fid_samples = 3"),
            "[eval] fid_samples = 3 with pr_neighbours = 3", "set fid_samples to at least 4")
    refused(tmp_path, with_table("[eval]", "fid_samples = 10\npr_neighbours = 10"),
            "set fid_samples to at least 11")
    assert load_suite(write(tmp_path, with_table("[eval]", "fid_samples = 4")))


def test_the_test_split_must_serve_the_sample_and_factor_metrics(tmp_path):
    refused(tmp_path, BASE.replace("test_size = 50", "test_size = 3"),
            "[dataset.circles] leaves 3 test images; precision and recall need more test "
            "images than pr_neighbours: give at least 4")
    refused(tmp_path, BASE.replace("test_size = 50", "test_size = 7"),
            "the linear probes of its true factors need at least 8")
    few = BASE.replace("train_size = 200", "train_size = 2").replace("val_size = 50",
                                                                     "val_size = 1")
    refused(tmp_path, few, "leaves 3 training and validation images", "give at least 8")
    smallest = BASE.replace("train_size = 200", "train_size = 7").replace(
        "val_size = 50", "val_size = 1").replace("test_size = 50", "test_size = 8")
    assert load_suite(write(tmp_path, smallest))


# --- models: buildable, and within the machine's memory ------------------------------------


def test_a_model_whose_parameters_exceed_the_memory_is_refused_with_the_numbers(tmp_path):
    wide = with_table("[model.mlp-vae]", "hidden = [30000, 30000]\nlatent_dim = 10000")
    refused(tmp_path, wide, "model 'mlp-vae' on dataset 'circles' has 2,708,780,144 parameters: "
            "with their gradients and Adam's two moments they need 40.4 GiB, more than this "
            "machine's memory (16.0 GiB); use narrower layers or fewer latent dimensions")


def test_the_memory_limit_is_the_machines(tmp_path, monkeypatch):
    monkeypatch.setattr(suite_module, "machine_memory", lambda: 2**20)
    message = refused(tmp_path, BASE, "model 'mlp-vae' on dataset 'circles' has ",
                      "GiB, more than this machine's memory (0.0 GiB)")
    assert re.search(r"has \d{3},\d{3} parameters", message)


def test_a_model_that_cannot_run_on_the_images_is_refused(tmp_path):
    text = BASE.replace('"mlp-vae"', '"conv-vae"') + "[model.conv-vae]\nchannels = " + str(
        [4] * 10) + "\n"
    refused(tmp_path, text, "model 'conv-vae' on dataset 'circles' does not run on images of "
                            "shape (1, 12, 12): RuntimeError:")


# --- the shipped suites ----------------------------------------------------------------------


def test_every_shipped_suite_still_loads():
    names = available_suites()
    assert {"smoke", "default", "zoo", "paper-iwae"} <= set(names)
    for name in names:
        assert load_suite(name).cells()


# --- through the command line: exit 2, one message, nothing written --------------------------


def listing(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.mark.parametrize("text", [
    'name = "../../escaped_suite"\n' + BASE,
    f'name = "{os.sep}tmp{os.sep}absolute_suite"\n' + BASE,
    BASE.replace('models = ["mlp-vae"]', 'models = ["a/b"]') + '[model."a/b"]\nentry = "iwae"\n',
    BASE + "[reference.circles]\nmlp-vae = 5\n",
    BASE.replace("train_size = 200", "train_size = 0"),
    with_table("[train]", "learning_rate = inf"),
    with_table("[model.mlp-vae]", "latent_dim = 1e9"),
    with_table("[eval]", "fid_samples = 1"),
    with_table("[model.mlp-vae]", "hidden = [100000, 100000]\nlatent_dim = 10000"),
    "datasets = [\n",
])
def test_the_cli_exits_2_with_one_message_and_writes_nothing(tmp_path, monkeypatch, capsys,
                                                             text):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, text)
    before = listing(tmp_path)
    status = main(["run", path, "--results-dir", str(tmp_path / "results"), "--device", "cpu",
                   "--wandb", "disabled"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and "Traceback" not in err
    assert listing(tmp_path) == before and not (tmp_path / "results").exists()
    assert not (tmp_path.parent / "escaped_suite").exists()


def test_the_cli_refuses_a_file_that_is_not_utf8(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bytes.toml"
    path.write_bytes(b"\xff\xfe" + BASE.encode("utf-16-le"))
    assert main(["run", str(path), "--results-dir", "results", "--device", "cpu",
                 "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8 text" in err and "Traceback" not in err
    assert listing(tmp_path) == {"bytes.toml"}
