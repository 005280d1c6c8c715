# One command each: `make demo`, `make test`. Every target installs first if needed.
PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
# CPU wheel by default; a CUDA user sets e.g. TORCH_SPEC="torch==2.13.0 --index-url <their CUDA index>"
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= airflow,monitoring,kubeflow,serving,services,postgres,dev
STAMP      := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers for make test / test-fast (whole files per worker: module fixtures stay in one process;
# every server a test starts takes a free port, so two workers never collide); 0 runs in this process
PYTEST_WORKERS ?= 2
PYTEST_XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
LSTM_PIPELINE_IMAGE ?= lstm-forecast-pipeline:latest

.PHONY: setup test test-fast lint demo loop-demo loop-demo-beijing mlflow-ui airflow services services-stop services-status bench bench-loop kfp clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

setup: $(STAMP)

test: setup
	$(BIN)/pytest $(PYTEST_XDIST) --durations=25 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest -m "not slow" $(PYTEST_XDIST) $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check pipeline dags tests benchmarks tools components
	$(BIN)/lint-imports
	$(BIN)/hadolint docker/Dockerfile

demo: setup
	$(BIN)/python -m tools.demo

# The closed loop heals: a generated hourly series slows to half speed (concept drift); the rule
# detects it, refits through T, the canary promotes; printed beside the never-retrained champion
loop-demo: setup
	$(BIN)/python -m tools.loop_demo

# The closed loop replayed on Beijing PM2.5: champion trained on the 180 days before 2014-09-24,
# a sensor recalibration (x2, a data fault) injected on 2014-10-01, daily checks to 2014-10-29 (docs/BENCHMARKS.md)
LOOP_DEMO_ARGS ?= --config configs/beijing_pm25_replay.yaml --start 2014-09-24 --end 2014-10-29 \
	--scenario recalibration_x2 --inject-at 2014-10-01 --history 180D
loop-demo-beijing: setup
	$(BIN)/python -m pipeline.cli replay $(LOOP_DEMO_ARGS)

mlflow-ui: setup
	MLFLOW_BIN=$(BIN)/mlflow bash mlflow/serve.sh $(MLFLOW_HOST) $(MLFLOW_PORT)

airflow: setup
	$(BIN)/python -m tools.airflow_local 127.0.0.1 8080

# Postgres (pgserver) + MLflow on Postgres + Airflow standalone on Postgres with the LocalExecutor,
# all on loopback, in the background; state in .services/ survives services-stop (README "Services")
services: setup
	$(BIN)/python -m tools.services start

services-stop: setup
	$(BIN)/python -m tools.services stop

services-status: setup
	$(BIN)/python -m tools.services status

bench: setup
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_training.py

bench-loop: setup
	$(BIN)/python benchmarks/bench_loop.py
	$(BIN)/python benchmarks/bench_policies.py

# compiled Kubeflow pipeline specs (KFP IR YAML) for the image $(LSTM_PIPELINE_IMAGE)
kfp: setup
	LSTM_PIPELINE_IMAGE=$(LSTM_PIPELINE_IMAGE) $(BIN)/python -m components.compile --out components/build

clean:
	rm -rf artifacts mlruns .airflow .pytest_cache  # .services/ (Postgres data) is kept: make services-stop, then rm -rf .services
