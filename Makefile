# Both entry points create the virtual environment and install first, so each works on a
# fresh machine that has only Python 3.11.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

UPGRADE_TORCH ?= 2.14.1
UPGRADE_VENV ?= .venv-torch-upgrade

.PHONY: run test test-fast bench clean upgrade-rehearsal version-matrix

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m compile_guard check

test: $(STAMP)
	$(PY) -m pytest -q tests

# Before each commit: every in-process test, plus one `smoke` test per surface that starts ranks (tests/conftest.py:
# a test that starts processes is marked `ranks` by the fixture it uses), and the format and lint check
# (tests/test_layers.py: `ruff format --check .` and `ruff check .`, ruff pinned in pyproject.toml's test extras).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not ranks or smoke" tests

bench: $(STAMP)
	$(PY) benchmarks/bench_repro.py

# Opt-in, not in CI: a second venv on the newer torch (a ~5 GB CUDA build that runs on
# CPU), then check / baseline refresh / baseline diff against the committed baselines.
upgrade-rehearsal:
	$(PYTHON) -m venv $(UPGRADE_VENV)
	$(UPGRADE_VENV)/bin/python -m pip install --quiet torch==$(UPGRADE_TORCH) -e '.[test]'
	$(UPGRADE_VENV)/bin/python benchmarks/upgrade_rehearsal.py

# Opt-in, not in CI: one venv per torch release (default: the floor, a middle release, the newest; 5-7 GB each),
# the same commands in each, one table. RELEASES=2.6.0,2.7.1 and KEEP=--keep to reuse the venvs.
RELEASES ?= 2.6.0,2.10.0,2.15.0
version-matrix: $(STAMP)
	$(PY) benchmarks/version_matrix.py --releases $(RELEASES) $(KEEP)

clean:
	rm -rf $(VENV) $(UPGRADE_VENV) build *.egg-info
