# Turnip: make install | test | demo | bench | plans | lint
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench plans lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -n 2 -q tests

demo: install
	@mkdir -p build/demo
	$(BIN)/turnipc plan tests/models/demo_mlp.onnx --gpu-mem 25% --dim batch=8 -o build/demo/demo.plan
	$(BIN)/turnipc verify build/demo/demo.plan
	$(BIN)/turnipc inspect build/demo/demo.plan --top 5
	$(BIN)/turnip-run build/demo/demo.plan --random-inputs --seed 0 --check

bench: install
	@mkdir -p bench/results
	$(BIN)/python bench/run_all.py

plans: install
	$(BIN)/python plans/regenerate.py

lint: install
	$(BIN)/ruff check turnipc runtime tests bench plans

clean:
	rm -rf build $(VENV)
