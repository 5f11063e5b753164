# Two commands on a fresh machine: `make bench` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUITE ?= default
RESULTS ?= results
REPORTS ?= reports
ARGS ?=

.PHONY: setup bench run report test planted-bugs lint wandb-sync clean-venv

setup: $(STAMP)

# Reinstalls only when pyproject.toml changes. torch and torchvision are pinned to the releases
# the project is tested with (see pyproject.toml for the supported range).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

bench: setup
	$(BIN)/vae-zoo run $(SUITE) --results-dir $(RESULTS) $(ARGS); status=$$?; \
	if [ $$status -le 1 ]; then $(BIN)/vae-zoo report $(SUITE) --results-dir $(RESULTS) \
	  --out $(REPORTS) || exit $$?; fi; exit $$status

run: setup
	$(BIN)/vae-zoo run $(SUITE) --results-dir $(RESULTS) $(ARGS)

report: setup
	$(BIN)/vae-zoo report $(SUITE) --results-dir $(RESULTS) --out $(REPORTS)

# The tests on every core (pytest-xdist; TEST_JOBS=0 runs them in one process), with line and
# branch coverage of vae_zoo/, least covered modules first. Fails below the floor in
# pyproject.toml ([tool.coverage.report] fail_under), and when the modules that compute reported
# numbers fall below ESTIMATOR_FLOOR together.
TEST_JOBS ?= auto
ESTIMATOR_MODULES := vae_zoo/metrics/*,vae_zoo/objectives.py,vae_zoo/evaluate.py,vae_zoo/likelihoods.py,vae_zoo/priors.py,vae_zoo/estimators.py,vae_zoo/model.py,vae_zoo/nets.py,vae_zoo/zoo.py,vae_zoo/report/statistics.py
ESTIMATOR_FLOOR := 98
test: setup
	rm -f .coverage .coverage.*
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile --cov --cov-report=term
	@echo "Coverage of the modules that compute reported numbers (floor $(ESTIMATOR_FLOOR) %):"
	$(BIN)/coverage report --include="$(ESTIMATOR_MODULES)" --fail-under=$(ESTIMATOR_FLOOR)

# Mutation testing of the estimators (mutmut; settings in pyproject.toml [tool.mutmut]): writes
# docs/mutants.md, every surviving mutant with why it is harmless; fails on an unexplained one.
# About 20 minutes on 2 cores; `make mutants MUTANTS="vae_zoo.evaluate*"` reruns some. mutmut
# exits non-zero only when it cannot run (e.g. the unmutated tests fail): then no report is
# written from stale results.
MUTANTS ?=
mutants: setup
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children $$(nproc) $(MUTANTS)
	$(BIN)/python tests/mutants_report.py docs/mutants.md

# Plants known one-line metric bugs in a copy of the repository; fails if the tests miss one.
planted-bugs: setup
	$(BIN)/python tests/planted_bugs.py

lint: setup
	$(BIN)/ruff check vae_zoo tests benchmarks

wandb-sync: setup
	$(BIN)/vae-zoo sync $(SUITE) --results-dir $(RESULTS)

clean-venv:
	rm -rf $(VENV)
