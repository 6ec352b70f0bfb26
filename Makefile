# The set-up commands of the README. Each creates .venv and installs into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,examples]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/posteriors.py
	$(PY) examples/bnn_digits.py
	$(PY) examples/diabetes_regression.py
	$(PY) examples/eight_schools.py
	$(PY) examples/vae_digits.py
	$(PY) examples/primitives.py
	$(PY) examples/borchify_trained.py
	$(PY) examples/laplace_regression.py
	$(PY) examples/mcmc_model_comparison.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The documentation site: runs every tutorial, builds docs/_build/html, warnings fail.
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m sphinx -W --keep-going -j auto -b html docs docs/_build/html
	$(PY) docs/_ext/check_api.py docs/_build/html

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info docs/_build docs/_gallery_src docs/tutorials docs/api

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m benchmarks.run
	$(PY) benchmarks/nuts_logistic.py
