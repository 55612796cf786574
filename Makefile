# Two commands on a fresh machine:  `make book` builds the website, `make test` runs every check.
# Both create .venv and install everything first; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BOOK_FLAGS := -W -n --keep-going
NBVAL_FLAGS := --nbval --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg --durations=10
# A second way to run the notebooks that changes floating-point results: PyTorch's own kernels
# one vector width narrower than the CPU's (AVX2 ones on an AVX-512 CPU, where the stored
# outputs are written; the scalar ones on any other CPU), one thread each. Stored outputs
# must not depend on either. Two notebooks run at a time (one per core).
# OTHER_CAPABILITY=default forces the scalar kernels (about 1.5x slower on these notebooks).
OTHER_CAPABILITY ?= $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo avx2 || echo default)
OTHER_NUMERICS := ATEN_CPU_CAPABILITY=$(OTHER_CAPABILITY) OMP_NUM_THREADS=1

.PHONY: setup data fetch-data book test lint unit notebooks notebooks-other-numerics assets \
	build-book browser lab serve clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the package, torch and the tools

data: setup  ## check Fashion-MNIST is installed (DOWNLOAD=1 fetches it via torchvision)
	$(BIN)/python -m minicompress.data $(if $(DOWNLOAD),--download,)

fetch-data: setup  ## find Fashion-MNIST, or download it once into the user cache (needs internet)
	$(BIN)/python -m minicompress.data --download

book: setup build-book  ## build the website into _build/html (stored outputs: no data needed)

assets:  ## copy MathJax into _offline_static/ so the site needs no network
	$(BIN)/python tools/offline_assets.py

build-book: assets
	$(BIN)/jupyter-book build . $(BOOK_FLAGS)

browser:  ## open every built page in headless Chromium, network blocked (needs `chromium`)
	$(BIN)/python -m pytest tests/browser

test: setup fetch-data lint unit notebooks build-book browser  ## everything CI runs

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two test processes (one per core), one thread each: about half the time of one process.
unit:
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests --ignore=tests/browser -n 2

# Stored outputs are written with the default thread count; both passes compare them at one
# thread per notebook, two notebooks at a time (one per core), which also checks that no
# stored output depends on the thread count, in about half the time of one at a time.
notebooks:  ## execute every notebook and compare with its stored outputs
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(NBVAL_FLAGS) -n 2 --dist loadfile book

notebooks-other-numerics:  ## the same under other kernels and one thread (CI runs it too)
	@echo "ATEN_CPU_CAPABILITY=$(OTHER_CAPABILITY)"
	$(OTHER_NUMERICS) $(BIN)/python -m pytest $(NBVAL_FLAGS) -n 2 --dist loadfile book

lab: setup data  ## open the course in JupyterLab
	$(BIN)/jupyter lab book

serve:  ## serve the built website on http://localhost:8000
	$(BIN)/python -m http.server --directory _build/html 8000

clean:  ## remove builds and caches (keeps .venv; `rm -rf .venv` for a full reset)
	rm -rf _build _offline_static .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
