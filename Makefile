# Two commands do all set-up on a fresh machine (see README):
#   make demo   install what is missing, then run the quickstart experiment
#   make test   install what is missing, then run the test suite
# make lab LAB=NN  install what is missing, then run teaching lab NN (labs/NN-*/run.sh)
# make mutants (not in CI): mutation testing of the rules, the attacks and the core ([tool.mutmut])
# An existing .venv is reused; it is only (re)installed when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedsim-installed

.PHONY: demo test bench lab mutants docs

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedsim run configs/quickstart.toml $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

# make docs: the documentation site into site/ (MkDocs-Material, warnings are errors); the
# reference pages are regenerated from the code first
docs: $(STAMP)
	$(PY) scripts/gen_docs.py
	$(VENV)/bin/mkdocs build --strict

# make bench (not in CI, ≈ 70 min on 2 cores, 35 of them the sweep at the headline cell size): every
# benchmark, then bench/results.md
bench: $(STAMP)
	$(PY) bench/aggregators.py --json
	$(PY) bench/overhead.py --json
	$(PY) bench/overhead.py --json --tag quickstart --repeat 2 --set rounds=10 --set data.train_size=4000 --set data.test_size=2000
	$(PY) bench/scale.py --json
	$(PY) bench/deployment.py --json
	$(PY) bench/sweep.py --json
	$(PY) bench/sweep.py --json --tag headline --set rounds=10 --set data.train_size=4000 --set data.test_size=1000
	$(PY) bench/report.py

lab: $(STAMP)
	@test -n "$(LAB)" && test -f labs/$(LAB)-*/run.sh || { echo "usage: make lab LAB=NN, NN one of: $$(cd labs && ls -d [0-9]*/ | cut -c1-2 | tr '\n' ' ')" >&2; exit 2; }
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash labs/$(LAB)-*/run.sh $(ARGS)

$(VENV)/.fedsim-mutants: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,mutants]"
	@touch $@

mutants: $(VENV)/.fedsim-mutants
	$(PY) scripts/mutants.py $(ARGS)
