# bars: thin targets; each calls `bars <command>` inside the project's virtual environment.
# On a fresh clone every target installs what it needs first (make install is implied).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BARS := $(BIN)/bars
STAMP := $(VENV)/.installed
# the FuxiCTR reference environment: its own venv (fuxictr needs ray and its own numpy/polars pins, so it never
# shares .venv or requirements.lock); bars is imported from this checkout (PYTHONPATH), models need only torch
REF_VENV := .venv-ref
REF_STAMP := $(REF_VENV)/.installed
REF_PYTEST := PYTHONPATH=$(CURDIR) $(REF_VENV)/bin/python -m pytest -c tests/reference/pytest.ini --rootdir tests/reference

DATA ?= movielens_small
MODEL ?= dcn
TRIALS ?=
WORKERS ?=
STORAGE ?=
TIMEOUT ?=
SEEDS ?= 5
RAW ?=
ROWS ?=
RUN ?=
FILE ?=
OUT ?=
KEEP ?=
FORMAT ?=
RANK ?=
RATIO ?=
PORT ?= 5000
PRESET ?=
MODELS ?=
BUDGET ?=
PLAN ?=
REBUDGET ?=
BOARD ?=
ARGS ?=
PYTEST_VERSION := $(shell sed -n 's/^pytest==//p' requirements.lock)

.DEFAULT_GOAL := help
.PHONY: help install lock data train sweep worker final board bars-plan leaderboard reproduce predict export compress ui dashboard test \
        test-slow lint bench bench-data bench-train bench-sweep bench-metrics bench-predict bench-reliability bench-load bench-missing bench-esmm bench-methods gpu-check clean \
        test-reference bench-reference

help: ## List the targets
	@echo "bars: open benchmarking for CTR prediction"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: DATA=$(DATA) MODEL=$(MODEL) PRESET METHOD TRIALS WORKERS STORAGE TIMEOUT SEEDS RAW ROWS RUN FILE OUT KEEP FORMAT RANK RATIO PORT MODELS BUDGET PLAN REBUDGET BOARD ARGS"
	@echo
	@echo "Datasets (DATA=, conf/data/):" $$(grep -L '^# alias:' conf/data/*.yaml | sed 's|conf/data/||; s|\.yaml$$||')
	@echo "Dataset aliases (the same run, the alias recorded):"
	@sed -n 's/^# alias: \([a-z0-9_]*\) -> \([a-z0-9_]*\) *(\(.*\)).*/  DATA=\1 = DATA=\2  (\3)/p' conf/data/*.yaml

$(STAMP): pyproject.toml requirements.lock setup.py bars/data/_fastcsv.c bars/models/layers/_kernels.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the locked dependencies (torch pinned first)

lock: ## Re-freeze requirements.lock from the current .venv (after changing pyproject.toml)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' | LC_ALL=C sort > requirements.lock

# Options every run command takes: PRESET=bars (a published configuration, conf/presets/), RAW=<dir> (raw data).
RUN_OPTS = $(if $(PRESET),preset=$(PRESET)) $(if $(RAW),data.raw_dir=$(abspath $(RAW))) $(if $(METHOD),method=$(METHOD))

data: $(STAMP) ## Prepare a dataset: make data DATA=<name> [RAW=<dir>] [ROWS=<n>] [ARGS="overrides"]
	$(BARS) prepare data=$(DATA) $(if $(RAW),data.raw_dir=$(abspath $(RAW))) $(if $(ROWS),data.rows=$(ROWS)) $(ARGS)

train: $(STAMP) ## Train one run: make train MODEL=<m> DATA=<d> [PRESET=bars] [METHOD=optfs|dnis|optembed|optinter] [RAW=<dir>] [GPUS=n] [ARGS="overrides"]
	$(BARS) train model=$(MODEL) data=$(DATA) $(RUN_OPTS) $(if $(GPUS),train.processes=$(GPUS)) $(ARGS)

sweep: $(STAMP) ## Optuna sweep: make sweep MODEL=<m> DATA=<d> [TRIALS=n] [BUDGET="5M samples"|30m] [WORKERS=k] [STORAGE=url] [TIMEOUT=s] [PRESET=bars]
	$(BARS) sweep model=$(MODEL) data=$(DATA) $(RUN_OPTS) $(if $(TRIALS),sweep.trials=$(TRIALS)) $(if $(BUDGET),"sweep.budget=$(BUDGET)") \
	  $(if $(WORKERS),sweep.workers=$(WORKERS)) $(if $(STORAGE),sweep.storage=$(STORAGE)) \
	  $(if $(TIMEOUT),sweep.timeout=$(TIMEOUT)) $(ARGS)

worker: $(STAMP) ## One sweep worker on an existing study (what a job runner starts on each node)
	$(BARS) sweep model=$(MODEL) data=$(DATA) $(RUN_OPTS) sweep.role=worker $(if $(STORAGE),sweep.storage=$(STORAGE)) $(ARGS)

final: $(STAMP) ## Rerun the sweep's best config (or PRESET=bars) with SEEDS seeds: make final MODEL=<m> DATA=<d> [SEEDS=5]
	$(BARS) final model=$(MODEL) data=$(DATA) final.seeds=$(SEEDS) $(RUN_OPTS) $(ARGS)

board: $(STAMP) ## Every model on one dataset at one fair budget, SEEDS finals each, then its leaderboard (resumable): make board DATA=<d> [MODELS=a,b|all] [BUDGET="1M samples"|10m] [SEEDS=5] [WORKERS=k] [JOBS=k] [PLAN=1] [REBUDGET=1] [BOARD=<name>] [RAW=<dir>]
	$(BARS) board --data $(DATA) $(if $(MODELS),--models $(MODELS)) $(if $(BUDGET),--budget "$(BUDGET)") \
	  $(if $(filter command line,$(origin SEEDS)),--seeds $(SEEDS)) $(if $(BOARD),--name $(BOARD)) \
	  $(if $(WORKERS),--workers $(WORKERS)) $(if $(JOBS),--jobs $(JOBS)) $(if $(PLAN),--plan) $(if $(REBUDGET),--rebudget) \
	  $(if $(RAW),data.raw_dir=$(abspath $(RAW))) $(ARGS)

bars-plan: $(STAMP) ## Print the runs that regenerate BARS's published board: make bars-plan DATA=<d> [SEEDS=n] [RAW=<dir>]
	@$(BARS) presets plan --preset $(or $(PRESET),bars) --data $(DATA) \
	  $(if $(filter command line,$(origin SEEDS)),--seeds $(SEEDS)) $(if $(RAW),--raw $(abspath $(RAW)))

leaderboard: $(STAMP) ## Write results/ tables and plots from MLflow: make leaderboard [DATA=<d>]
	$(BARS) leaderboard $(if $(filter command line,$(origin DATA)),leaderboard.data=$(DATA)) $(ARGS)

reproduce: $(STAMP) ## Rerun one MLflow run exactly: make reproduce RUN=<run id>
	$(BARS) reproduce run_id=$(RUN) $(ARGS)

predict: $(STAMP) ## Score a file with a run: make predict RUN=<run id> FILE=<csv|tsv|parquet> [OUT=<path>] [KEEP=col1,col2]
	$(BARS) predict run_id=$(RUN) file=$(if $(FILE),$(abspath $(FILE))) $(if $(OUT),out=$(abspath $(OUT))) \
	  $(if $(KEEP),keep=$(KEEP)) $(ARGS)

export: $(STAMP) ## Export a run's model, verified: make export RUN=<run id> FORMAT=onnx|torchscript [OUT=<dir>]
	$(BARS) export run_id=$(RUN) format=$(FORMAT) $(if $(OUT),out=$(abspath $(OUT))) $(ARGS)

compress: $(STAMP) ## Low-rank compression of a run, evaluated, as a child run: make compress RUN=<run id> [RANK=<k> | RATIO=<r>]
	$(BARS) compress run_id=$(RUN) $(if $(RANK),rank=$(RANK)) $(if $(RATIO),ratio=$(RATIO)) $(ARGS)

ui: $(STAMP) ## MLflow UI on 127.0.0.1:$(PORT) over the project's store
	$(BARS) ui --port $(PORT)

dashboard: $(STAMP) ## optuna-dashboard on 127.0.0.1 over a sweep's storage: make dashboard MODEL=<m> DATA=<d>
	$(BARS) dashboard model=$(MODEL) data=$(DATA) $(if $(PRESET),preset=$(PRESET)) $(if $(STORAGE),sweep.storage=$(STORAGE)) $(ARGS)

test: $(STAMP) ## Fast test suite (a few minutes) plus lint and the import-layer contracts
	$(BIN)/ruff check bars tests datasets scripts
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(ARGS)

test-slow: $(STAMP) ## Long end-to-end tests (marked slow)
	$(BIN)/python -m pytest -q -m slow $(ARGS)

$(REF_STAMP): Makefile
	@test -x $(REF_VENV)/bin/python || $(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(REF_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(REF_VENV)/bin/python -m pip install --quiet fuxictr==2.3.10 pytest==$(PYTEST_VERSION)
	@touch $(REF_STAMP)

test-reference: $(REF_STAMP) ## Every model equal to its FuxiCTR 2.3.10 composition (own venv .venv-ref; real Frappe rows)
	$(REF_PYTEST) tests/reference $(ARGS)

bench-reference: $(REF_STAMP) ## Training samples/s of each model vs its FuxiCTR composition (Frappe and Criteo shapes); ARGS=--whole-run: whole 4-epoch runs vs FuxiCTR's flow
	PYTHONPATH=$(CURDIR) $(REF_VENV)/bin/python tests/reference/bench_reference.py $(ARGS)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check bars tests datasets scripts

bench: bench-data bench-train bench-metrics bench-predict ## All benchmarks (print figures; the hours-long sweep study: make bench-sweep)
	$(BARS) bench sweep --overhead $(ARGS)

bench-data: $(STAMP) ## Preprocessing rows/s, peak RSS, load s on synthetic data: [ROWS=1000000,4000000] (any size, e.g. 45000000) [ARGS="--cardinality criteo --min-count 10"]: Criteo's vocabulary sizes
	$(BARS) bench data $(if $(ROWS),--rows $(ROWS)) $(ARGS)

bench-train: $(STAMP) ## Training samples/s for every model, DCN at Frappe_x1, DCN/DeepFM/DNN at Criteo shape (2.5M emb rows)
	$(BARS) bench train $(ARGS)

bench-metrics: $(STAMP) ## AUC over 10M scores
	$(BARS) bench metrics $(ARGS)

bench-predict: $(STAMP) ## Predict rows/s from a raw file vs validation rows/s of the same model (goal: within 1.5x)
	$(BARS) bench predict $(ARGS)

bench-sweep: $(STAMP) ## Sweep-strategy study (docs/sweeps.md; resumable, hours): grid/random/TPE/+median/+Hyperband at the grid's compute; OVERHEAD=1: a sweep trial's fixed cost only
	$(BARS) bench sweep $(if $(OVERHEAD),--overhead,--docs docs/sweeps.md) $(ARGS)

gpu-check: $(STAMP) ## On a GPU machine: CUDA tests, bench-train on CUDA (eager, CUDA graph), a 2-workers-per-GPU sweep, 1 vs 8 packed workers, precision switches' AUC, a 2-process DDP run; prints a table
	scripts/gpu-check $(ARGS)

bench-reliability: $(STAMP) ## Reliability checks at full count: 10,000 fuzz cases per format, 100 kill points per command (hours on 2 cores)
	BARS_FUZZ_EXAMPLES=$(or $(FUZZ),10000) BARS_CHAOS_POINTS=$(or $(POINTS),100) $(BIN)/python -m pytest -q -n 0 \
	  -m "slow or not slow" --durations=0 tests/test_fuzz_readers.py tests/test_chaos.py tests/test_first_use.py \
	  tests/test_store_goes_away.py tests/test_disk_full.py tests/test_validate_first.py $(ARGS)

bench-esmm: $(STAMP) ## ESMM's CVR AUC over all impressions vs a CVR model trained on clicked rows only (funnel demo, 3 seeds)
	$(BARS) bench esmm $(ARGS)

bench-load: $(STAMP) ## WORKERS (8) sweep workers on one study for MINUTES (10), SQLite+journal and PostgreSQL: lost/duplicated/RUNNING
	$(BARS) bench load $(if $(WORKERS),--workers $(WORKERS)) $(if $(MINUTES),--minutes $(MINUTES)) $(if $(SETUPS),--setups $(SETUPS)) $(ARGS)

bench-methods: $(STAMP) ## Per-epoch cost of each method's stages beside the plain backbone (DNN, movielens_small, 1 thread; REPEATS=1)
	$(BARS) bench methods $(if $(REPEATS),--repeats $(REPEATS)) $(ARGS)

bench-missing: $(STAMP) ## Missing values: FuxiCTR's OOV row vs the padding row, Criteo/Avazu slices, test AUC/logloss
	$(BARS) bench missing $(ARGS)

clean: ## Remove caches (keeps data/, mlflow.db and .venv)
	rm -rf .pytest_cache .ruff_cache .hypothesis
