# The two commands of the README: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.py requirements.txt | cksum | cut -d' ' -f1)

.PHONY: demo test install clean-demo bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) setup.py requirements.txt
	$(PY) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=30 tests

demo: $(STAMP)
	$(PY) tools/run_demo.py

bench: $(STAMP)
	$(PY) bench/input_pipeline.py
	$(PY) bench/models.py
	$(PY) bench/train_step.py --quick

clean-demo:
	rm -rf demo_data demo_out
