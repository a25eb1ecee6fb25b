# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the main job (a small toy study)
#   make test   set up .venv and run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-all bench study study-quick study-medium

$(BIN)/symfw: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first, so no multi-GB CUDA build is pulled
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,ray,jets,formats]'
	touch $(BIN)/symfw

setup: $(BIN)/symfw

# the paper's three models on 20k toy Z→μμ events, 3 seeds each, each model's learning rate chosen
# on the validation split from the same grid: table on stdout, plots in runs/demo
# (--resume: a second `make demo` continues or re-reads the same run instead of refusing;
#  --jobs 2 --threads 1: the 9 trainings in two processes of one thread each — small models gain little
#  from more threads per process, and lose a lot when cores are shared)
demo: setup
	$(BIN)/symfw compare pfn invariant hybrid --data zmumu --events 20000 --epochs 15 --seeds 3 --lr-grid 3e-4,1e-3,3e-3 --out runs/demo --resume --jobs 2 --threads 1

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: setup
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# the research studies written up in docs/study.md (study/run.sh): quick < 10 min, medium ~1 h, paper: many hours
study-quick: setup
	bash study/run.sh quick

study-medium: setup
	bash study/run.sh medium

study: setup
	bash study/run.sh paper
