# The repository's entry points. `make repro` runs the default experiment; `make test` checks everything.
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1    # a stage's printed lines reach the terminal as they are printed, through REPRO's filter
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# dvc repro, less its closing "Use `dvc push` to send your updates to remote storage": the bundled remote only
# ships the raw data (`dvc pull data.dvc`); what a run makes stays in this clone
# setuptools' notice on every editable install, which asks nothing of us
QUIET_BUILD = PYTHONWARNINGS="ignore:Editable installation"
REPRO = dvc repro $(1) | { grep --line-buffered -v '^Use `dvc push` to send your updates to remote storage.$$' || true; }

.PHONY: install test export-check nbtest pytest lint repro results experiments grid frontier bench lab

install: $(VENV)/.installed  ## create .venv and install craft (editable) with dev extras; idempotent

$(VENV)/.installed: pyproject.toml plugins/lerobot_policy_small_vla/pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(QUIET_BUILD) $(BIN)/pip install --quiet -e ".[dev]"
	$(QUIET_BUILD) $(BIN)/pip install --quiet -e plugins/lerobot_policy_small_vla   # LeRobot's tools discover small_vla by this name
	$(BIN)/python -c "from craft.project import write_offline_plots_template as w; w('.')"
	touch $@

test: install export-check nbtest pytest lint  ## exports in sync, notebook tests, pytest, ruff

# nbdev-export rewrites pyproject.toml with the same content; its old time is put back so that make does not reinstall
export-check:  ## craft/ must be exactly what nbdev-export makes from nbs/
	@before=$$(find craft -name '*.py' -exec sha256sum {} + | sort); \
	saved=$$(mktemp); cp -p pyproject.toml $$saved; \
	nbdev-export; \
	if cmp -s pyproject.toml $$saved; then touch -r $$saved pyproject.toml; fi; rm -f $$saved; \
	after=$$(find craft -name '*.py' -exec sha256sum {} + | sort); \
	if [ "$$before" != "$$after" ]; then \
	  echo "craft/ was out of date with nbs/: nbdev-export rewrote it. Review and commit craft/."; exit 1; \
	fi; echo "exports in sync"

# the notebooks' and tests' temporary files go to a folder of their own, removed when they end
IN_SCRATCH = scratch=$$(mktemp -d); TMPDIR=$$scratch $(1); status=$$?; rm -rf $$scratch; exit $$status

nbtest:  ## every module notebook, each named as it starts and ends
	@$(call IN_SCRATCH,nbdev-test --n-workers 2 --timing --do-print)

pytest:  ## each test named as it passes
	@$(call IN_SCRATCH,pytest -v)


lint:
	ruff check craft tests benchmarks nbs plugins

repro: install  ## the default experiment, end to end: restore the raw data, run the pipeline, fill the README
	dvc pull data.dvc
	$(call REPRO)
	$(MAKE) results

results: install  ## rewrite the README's results blocks from metrics/eval.json and metrics/rollout.json
	python -c "from craft.evaluate import write_results; write_results('README.md', 'metrics/eval.json', 'metrics/train')"
	python -c "from craft.rollout import write_rollout_results as w; w('README.md', 'metrics/rollout.json')"

# dvc exp show on one screen: the parameters that differ between the experiments and the headline metrics (MCQ,
# accuracy above the image floor, both tasks' losses, success rates) that differ. Left out: the dependencies'
# hashes (columns named by a path: no `file:` prefix, a slash), the run summaries (timings, final losses)
EXPERIMENTS_DROP = '^[^:]*/[^:]*$$|^(data|models|cache|outputs|dvclive|plots)$$|^metrics/train/|seconds|peak_memory|^final\.'

experiments: install  ## compare the experiments of `dvc exp run`: what changed and what it did, in ≤ 20 columns
	dvc exp show --only-changed --md --drop $(EXPERIMENTS_DROP)

grid: install  ## every method × seed of params.yaml `grid`, aggregated; about an hour on 2 cores; fills the README
	dvc pull data.dvc
	$(call REPRO,grid/dvc.yaml)
	python -c "from craft.grid import write_grid_results; write_grid_results('README.md', 'grid/results.json')"

frontier: install  ## matched-loss frontiers: every point of params.yaml `frontier` × seed; about 75 min on 2 cores (48 runs); fills the README
	dvc pull data.dvc
	$(call REPRO,frontier/dvc.yaml)
	python -c "from craft.frontier import write_frontier_results as w; w('README.md', 'frontier/results.json')"

bench: install  ## performance benchmarks (not part of the tests)
	python benchmarks/grad_surgery.py

lab: install
	jupyter lab
