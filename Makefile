# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the main job on embedded defaults
#   make test   set up .venv and run the test-suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lptem-installed

.PHONY: demo test test-all lint typecheck bench model etching-model clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CPU build of PyTorch, pinned (any other request may pull a multi-GB CUDA build)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,tem,cluster,viewer]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lptem demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "not gpu"

lint: $(STAMP)
	$(VENV)/bin/ruff check lptem_dask tests benchmarks pipelines
	$(VENV)/bin/mypy

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# the shipped U-Nets: the default in two stages of 50 min each on 2 CPU cores, then the
# "rods" model from it in 40 min more (see the configs)
model: $(STAMP)
	$(VENV)/bin/lptem train configs/train/default_stage1.yaml --out lptem_dask/models --name default
	$(VENV)/bin/lptem train configs/train/default.yaml --out lptem_dask/models --name default
	$(VENV)/bin/lptem train configs/train/rods.yaml --out lptem_dask/models --name rods

# the etching benchmark's model (benchmarks/models/etching.*, not shipped in the package):
# the default model fine-tuned on labelled frames of 40 randomised simulated etching
# videos at their native 0.2 nm/px (about 2 min to render, 30 min to train here)
etching-model: $(STAMP)
	$(PY) benchmarks/make_etching_set.py --out benchmarks/out/etching_set --videos 40
	$(VENV)/bin/lptem train configs/train/etching.yaml --finetune benchmarks/out/etching_set \
		--out benchmarks/models --name etching --overwrite

clean-venv:
	rm -rf $(VENV)
