# `make demo` and `make test` create .venv when needed; nothing else must be installed by hand.
# .venv holds exactly the versions in requirements/dev.lock (every runtime and dev dependency, tested
# together); a changed lock or pyproject.toml rebuilds it from scratch.
# `make upgrade-deps` regenerates the lock against the newest releases (torch stays pinned to the CPU
# build by constraints.txt), rebuilds .venv from it and runs the tests; `make lock` re-resolves after
# an edit of pyproject.toml's dependencies and keeps every pin it can.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/dev.lock
# pip-compile works on a copy (it reads the current pins from it) and its result, under the header
# below, replaces the lock only when it differs: an unchanged lock leaves .venv alone.
PIP_COMPILE = cp $(LOCK) $(LOCK).new && CUSTOM_COMPILE_COMMAND='make upgrade-deps' $(BIN)/pip-compile --quiet \
	--extra dev --constraint constraints.txt --allow-unsafe --strip-extras --no-build-isolation \
	--no-emit-index-url --no-emit-find-links --output-file $(LOCK).new pyproject.toml
LOCK_HEADER = { \
	echo '\# The exact versions `make` installs into .venv: every runtime and dev dependency of pyproject.toml.'; \
	$(BIN)/python -c 'import platform as p; print(f"\# Resolved by pip-compile with Python {p.python_version()} on {p.system()} {p.machine()}.")'; \
	echo '\# torch is the CPU build (pinned by constraints.txt). GPU users install a CUDA build of torch and'; \
	echo '\# do not use this file as it is: see README, "Installing with a GPU".'; \
	cat $(LOCK).new; } > $(LOCK).tmp && rm $(LOCK).new && \
	if cmp -s $(LOCK).tmp $(LOCK); then rm $(LOCK).tmp; echo "$(LOCK) unchanged"; else mv $(LOCK).tmp $(LOCK); fi

.PHONY: demo test lint nist bench bench-dist gallery clean lock upgrade-deps

# --no-deps everywhere: only what the lock names is installed, and `pip check` proves it is complete.
# --no-build-isolation: gradreg itself is built with the lock's setuptools, not the newest one.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check || { echo "$(LOCK) does not fit pyproject.toml: run make lock" >&2; exit 1; }
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

# pip-compile at the version the lock pins, even when the lock no longer fits pyproject.toml.
$(BIN)/pip-compile: $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) pip-tools
	touch $@

lock: $(BIN)/pip-compile
	$(PIP_COMPILE)
	@$(LOCK_HEADER)

upgrade-deps: $(BIN)/pip-compile
	$(PIP_COMPILE) --upgrade
	@$(LOCK_HEADER)
	$(MAKE) test

nist: $(STAMP)
	$(BIN)/python benchmarks/nist_accuracy.py

# Issue 13's goals: gradreg beside its peers and the plain scripts of benchmarks/baselines, one
# process each (data cached in benchmarks/.cache). Flags through BENCH_ARGS, e.g. '--quick' (every
# case on small data, to check the harness) or '--stream-rows 20000000 --json bench.json'.
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset in the benchmark targets only, never in tests or
# CI: set, they pin numpy's OpenBLAS to an older, slower kernel, and the peers would run on it.
bench: $(STAMP)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# one process against two (--nproc 2, gloo) on the benchmark's data (about 2 minutes on 2 cores)
bench-dist: $(STAMP)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/distributed.py

# The README's pictures: the demo's PNGs and a screenshot of its report (needs chromium).
gallery: $(STAMP)
	$(BIN)/gradreg demo --out docs/gallery >/dev/null
	$(BIN)/gradreg report docs/gallery/crops.safetensors crops -o docs/gallery/report.html
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,1400 \
		--screenshot=docs/gallery/report.png file://$(CURDIR)/docs/gallery/report.html 2>/dev/null
	rm -f docs/gallery/crops.safetensors docs/gallery/report.html
