# make demo / make test work from a fresh clone: each sets up .venv first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
ADARES := $(VENV)/bin/adares
STAMP  := $(VENV)/.installed-stamp
# Installed first and on its own: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: demo test lint bench bench-frontend bench-extract bench-diffres bench-accuracy bench-accuracy-screen screen screen-joint data train-default clean fuzz

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(ADARES) extract --hop 5ms demo/audio demo-out
	@echo "features written to demo-out/ (see demo-out/manifest.jsonl)"

test: $(STAMP)
	$(PY) -m pytest -q

# ruff's lint rules and its formatter's layout (pyproject.toml); CI runs both before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check adares cli tests benchmarks
	$(VENV)/bin/ruff format --check adares cli tests benchmarks

clean:
	rm -rf demo-out .pytest_cache .hypothesis

# Benchmarks: each writes benchmarks/results/<name>.json and its section of benchmarks/RESULTS.md.
bench-frontend: $(STAMP)
	$(PY) benchmarks/bench_frontend.py

bench-diffres: $(STAMP)
	$(PY) benchmarks/bench_diffres.py

bench-extract: $(STAMP)
	$(PY) benchmarks/bench_extract.py --models none,flux,default --formats npz,shards

# The full accuracy study: every configuration on every task, two seeds, 25 epochs (about 80 minutes
# of both cores from a cold cache); the claims are judged on it. Needs `make data` first.
bench-accuracy: $(STAMP)
	$(PY) benchmarks/bench_accuracy.py

# Its screening pass (the configurations the claims compare, one seed, 12 epochs): part of `make bench`.
bench-accuracy-screen: $(STAMP)
	$(PY) benchmarks/bench_accuracy.py --pass screen

# The screen of issue 15: features as `adares extract` writes them, one fixed classifier, group
# folds x seeds, paired against none / uniform / flux. CONFIGS: model names or bundle paths.
# Cached under benchmarks/cache/screen: a new configuration costs under 30 min on 2 cores.
CONFIGS ?= default
screen: $(STAMP)
	$(PY) benchmarks/screen.py --configs $(CONFIGS)

# Its joint mode (issue 15, item 5): adares train's DiffRes trained with the classifier in every
# run, at 0.75, section screen-joint. About 40 min on 2 idle cores (each run trains the estimator
# on the fine frames: 2-3x the cost of a `none` run); the baselines come from the cache.
screen-joint: $(STAMP)
	$(PY) benchmarks/screen.py --configs joint

# Every benchmark, under half an hour on a 2-core machine (after `make data`).
bench: bench-frontend bench-diffres bench-extract bench-accuracy-screen

# Rebuilds the shipped compressor adares/pretrained/default from scratch (needs `make data`: it trains on
# the wide variety, other renderings than the screen tests), in about 15 min on one core: byte for byte on the
# same kind of CPU (another CPU's kernels round differently, and training amplifies it; see README).
train-default: $(STAMP)
	$(PY) adares/pretrained/make_default.py

# Decoder fuzzing (benchmarks/fuzz.py), about 5 minutes: 100,000 mutated files through adares.load,
# 600 through the pipeline, and 2 minutes of atheris when installed (pip install -e ".[fuzz]").
fuzz: $(STAMP)
	nice -n 10 $(PY) benchmarks/fuzz.py --cases 100000 --atheris-seconds 120

# Benchmark datasets (keywords, pitch, drums) from Debian audio tools; see benchmarks/data/README.md.
data: $(STAMP)
	bash benchmarks/data/install.sh
	$(PY) benchmarks/data/make_datasets.py --out benchmarks/data/generated
	$(PY) benchmarks/data/make_datasets.py --variety wide --seed 1 --out benchmarks/data/generated-wide
	$(PY) benchmarks/data/digests.py benchmarks/data/generated benchmarks/data/generated-wide
