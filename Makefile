# `make demo` and `make test` create .venv when needed; nothing else must be installed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint nist bench bench-dist gallery clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gradreg demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) gradreg-demo .pytest_cache

nist: $(STAMP)
	$(BIN)/python benchmarks/nist_accuracy.py

# gradreg and its peers side by side (data cached in benchmarks/.cache; about 10 minutes on 2 cores)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

# one process against two (--nproc 2, gloo) on the benchmark's data (about 2 minutes on 2 cores)
bench-dist: $(STAMP)
	$(BIN)/python benchmarks/distributed.py

# The README's pictures: the demo's PNGs and a screenshot of its report (needs chromium).
gallery: $(STAMP)
	$(BIN)/gradreg demo --out docs/gallery >/dev/null
	$(BIN)/gradreg report docs/gallery/crops.safetensors crops -o docs/gallery/report.html
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,1400 \
		--screenshot=docs/gallery/report.png file://$(CURDIR)/docs/gallery/report.html 2>/dev/null
	rm -f docs/gallery/crops.safetensors docs/gallery/report.html
