# Set-up-and-go targets. Every target creates .venv with python3.10 when missing and
# installs the pinned stack (idempotent: re-runs only when requirements/pyproject change).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
NCS := $(VENV)/bin/ncs
STAMP := $(VENV)/.installed
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0

DATA ?= .ncs/data/video
DAYS ?= 4
ROWS ?= 50000
SEEDS ?= 3
VARIANTS ?= all
OUT ?= .ncs/compare

SERVING ?= serving_models/ctr_cvr
PURCHASE_DATA ?= .ncs/data/purchase
RESULTS ?= docs/results
# the papers' Table 2 on the purchase scenario: the watch-based gradient-conflict rows do not apply
PURCHASE_VARIANTS ?= single,layer,connection,neuron,connection+balance,connection+mv,connection+big,shared_bottom,mmoe,cgc,ple,esmm,connection_theta,connection_random

.PHONY: install run daily compare table2 results test bench bench-daily bench-streaming clean

install: $(STAMP)

# The pins go in with uv (parallel downloads, installs from its cache; bytecode compiled up front because imports
# of TF/TFX from source are slow), about 1 minute against pip's 5. requirements.txt pins every package, so when
# uv's cache already holds them all the install needs no index (--offline: 1.8 s instead of 16 s of index
# requests before the compile); anything missing falls back to the normal install. INSTALLER=pip uses pip alone,
# e.g. behind a mirror configured for pip only (uv reads UV_INDEX_URL / UV_EXTRA_INDEX_URL, not pip.conf).
INSTALLER ?= uv
UV_PIN := uv==0.13.8

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || python3.10 -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(PY) -m pip install --disable-pip-version-check -q $(UV_PIN)
	$(VENV)/bin/uv pip install --python $(PY) -q --compile-bytecode --offline -r requirements.txt 2>/dev/null \
		|| $(VENV)/bin/uv pip install --python $(PY) -q --compile-bytecode -r requirements.txt
	$(VENV)/bin/uv pip install --python $(PY) -q --no-deps --no-build-isolation -e .
else
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
endif
	@touch $(STAMP)

$(DATA)/.complete: | $(STAMP)
	$(NCS) generate --out $(DATA) --days $(DAYS) --rows-per-day $(ROWS) --seed 0 --with-truth
	@touch $@

# The main job: the TFX pipeline on the default logs (ExampleGen ... Evaluator -> Pusher), then a summary.
# RUN_BUDGET: the quick first run trains a fixed 2 epochs (training.epochs); RUN_BUDGET= trains under
# the config's budget protocol (early stopping everywhere, several times the model compute).
RUN_BUDGET ?= --set training.patience=null
run: $(STAMP) $(DATA)/.complete
	$(NCS) run --config configs/video.yaml --data $(DATA) --serving-dir $(SERVING) $(RUN_BUDGET)

# Every model variant on the same split, 3 seeds: results.json + report.md (docs/results/ has one)
compare: $(STAMP) $(DATA)/.complete
	$(NCS) compare --config configs/video.yaml --data $(DATA) --variants $(VARIANTS) --seeds $(SEEDS) --out $(OUT)

$(PURCHASE_DATA)/.complete: | $(STAMP)
	$(NCS) generate --out $(PURCHASE_DATA) --days $(DAYS) --rows-per-day $(ROWS) --seed 0 --with-truth --scenario purchase
	@touch $@

# The papers' Table 2 under the budget protocol (configs: training.patience), SEEDS seeds -> RESULTS (docs/results)
table2: $(STAMP) $(DATA)/.complete
	$(NCS) compare --config configs/video.yaml --data $(DATA) --variants table2 --seeds $(SEEDS) --out $(RESULTS)

# Table 2 on both scenarios: the video logs -> RESULTS, the purchase scenario -> RESULTS/purchase
results: table2 $(PURCHASE_DATA)/.complete
	$(NCS) compare --config configs/purchase.yaml --data $(PURCHASE_DATA) --variants $(PURCHASE_VARIANTS) --seeds $(SEEDS) \
		--out $(RESULTS)/purchase

# CI (.ci/run). worksteal + tests/conftest.py start the end-to-end tests (marker e2e) first, one per
# worker; per-test timeouts come from pyproject.toml (pytest-timeout); the 20 slowest are listed.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=20 tests

bench: $(STAMP)
	$(PY) benchmarks/train_throughput.py

# Peak memory of MaskSearch / MaskedTrainer on 1M and 4M transformed impressions, streamed vs in-memory throughput
bench-streaming: $(STAMP)
	$(PY) benchmarks/streaming.py --rows 1000000 --scale 4

# One daily increment on 1M impressions (docs/benchmarks.md "Daily increment benchmark"); ~40 min on 2 cores
bench-daily: $(STAMP)
	$(PY) benchmarks/daily_increment.py --rows 1000000 --setup-rows 200000

# The daily increment for yesterday's folder under DATA (and any missed day), then the history table
daily: $(STAMP)
	$(NCS) daily --config configs/video.yaml --data $(DATA) --serving-dir $(SERVING)
	$(NCS) history --config configs/video.yaml

clean:
	rm -rf .ncs .pytest_cache serving_models
