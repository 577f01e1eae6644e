# Quick start: `make demo` (generate data, train, distil, evaluate) and `make test` (the test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
NVCC := $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_ARCHS ?= 8.0;8.6;8.9;9.0
CUDA_SOURCES := $(wildcard mmdet3d/ops/*/src/*.cu mmdet3d/ops/*/src/*.cpp mmdet3d/ops/*/src/*.h mmdet3d/ops/*/src/*.cuh)
DEMO_DIR ?= runs/demo
DEMO_DATA ?= data/synthetic
PYTEST_WORKERS ?= 2

.PHONY: install ext openmpi test test-all demo clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	@touch $@

# Compiles the CUDA extension wherever a CUDA toolkit exists (also on a machine without a GPU: it proves the kernels
# build); elsewhere the ops run their pure-PyTorch paths.
ext: $(VENV)/.ext

$(VENV)/.ext: $(VENV)/.installed $(CUDA_SOURCES) setup.py
ifneq ($(NVCC),)
	@echo "building the CUDA extension (archs $(CUDA_ARCHS)); the first build takes a few minutes"
	PATH=$(dir $(NVCC)):$$PATH FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$(CUDA_ARCHS)" MAX_JOBS=2 \
		$(PY) -m pip install -q --no-build-isolation --no-deps -e .
else
	@echo "no CUDA toolkit found: skipping the CUDA extension (pure-PyTorch ops)"
endif
	@touch $@

openmpi:
	@command -v mpirun >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null; \
		else echo "OpenMPI not found: install openmpi-bin for 'torchpack dist-run' (torchrun works without it)"; fi; }

test: install ext openmpi
	$(PY) -m pytest -m "not slow" -n $(PYTEST_WORKERS) -q

test-all: install ext openmpi
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

demo: install
	$(PY) tools/demo.py --data-dir $(DEMO_DATA) --run-dir $(DEMO_DIR)

clean:
	rm -rf build *.egg-info mmdet3d/_ext*.so
