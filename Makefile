# The two commands of the README: `make demo` and `make test`; each sets up .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= nvscope-demo

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/nvscope demo --out $(OUT)

test: $(VENV)/.installed
	$(VENV)/bin/pytest -q

bench: $(VENV)/.installed
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
