# Turnip: make install | test | demo | bench | plans | lint | fuzz
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench plans lint fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py turnipc/layout/_canonical.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,dev,compiler,plot]'
	touch $(STAMP)

test: install lint
	$(BIN)/python -m pytest -n 2 -q tests

demo: install
	@mkdir -p build/demo
	$(BIN)/turnipc plan tests/models/gpt2_dynamo18.onnx --gpu-mem 25% --dim batch=2 --dim seq=16 -o build/demo/gpt2.plan
	$(BIN)/turnipc verify build/demo/gpt2.plan
	$(BIN)/turnipc inspect build/demo/gpt2.plan --top 5 --plot build/demo/memory.png
	$(BIN)/turnipc simulate build/demo/gpt2.plan --device h100
	$(BIN)/turnip-run build/demo/gpt2.plan --random-inputs --seed 0 --check --trace build/demo/run.json
	@echo "demo: GPT-2 planned at 25% of its GPU memory, verified, run and checked; pictures in build/demo/"

bench: install
	@mkdir -p bench/results
	$(BIN)/python bench/run_all.py

plans: install
	$(BIN)/python plans/regenerate.py

# The long fuzz campaign over plan files (issue 15); figures in bench/results/fuzz.json.
fuzz: install
	@mkdir -p bench/results
	$(BIN)/python tests/fuzz_plans.py --cases 20000 --seed 1 --run-every 4

lint: install
	$(BIN)/ruff check turnipc runtime tests bench plans
	$(BIN)/mypy

clean:
	rm -rf build $(VENV)
