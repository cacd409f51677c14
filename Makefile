# apkimage — `make test` and `make perf` set themselves up (venv, Python deps, Debian tools).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_TOOLS := docker-registry skopeo umoci bubblewrap apache2-utils valgrind graphviz
BASE ?=
PYTEST_ARGS ?=

.PHONY: test test-fast fuzz perf bench peer-tools lint tools venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	$(BIN)/python -m compileall -q builder perf >/dev/null
	touch $(STAMP)

# Debian tools the tests drive (registry, skopeo, umoci, bwrap, valgrind, graphviz). Installed
# only when missing.
# Debian 12's umoci (0.4.7) cannot unpack zstd layers: a newer one from Debian unstable is put
# in $(VENV)/tools/bin (first on the tests' PATH), leaving the system's as it is.
tools:
	@missing=""; \
	for t in docker-registry skopeo umoci bwrap htpasswd valgrind dot; do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "not root: cannot install$$missing; tests needing them will be skipped"; exit 0; fi; \
	echo "installing Debian tools:$$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_TOOLS) >/dev/null
	@scripts/umoci-from-unstable.sh $(VENV)/tools || echo "no umoci >= 0.5: the zstd unpack test will be skipped"

# As root (tools installed), a test that needs a missing tool fails instead of skipping.
TEST_ENV := PATH="$(CURDIR)/$(VENV)/tools/bin:$$PATH" APKIMAGE_REQUIRE_TOOLS=$$( [ "$$(id -u)" = 0 ] && echo 1 )

test: venv tools
	$(BIN)/ruff check builder perf tests
	$(BIN)/mypy
	$(TEST_ENV) $(BIN)/pytest -n 2 $(PYTEST_ARGS)

# The quick loop: no Debian tools needed, nothing marked slow, tools or network (pyproject.toml).
test-fast: venv
	$(BIN)/ruff check builder perf tests
	$(BIN)/mypy
	$(BIN)/pytest -n 2 -m "not slow and not tools and not network" $(PYTEST_ARGS)

# The tools `apkperf peers` measures apkimage against: pigz and apk (Debian's apk-tools, where
# the archive has it); tar, gzip and umoci come with the system and `make tools`. Installed only
# when missing, as root; a peer whose tool is missing is skipped (and says so) in the results.
peer-tools:
	@missing=""; \
	command -v pigz >/dev/null 2>&1 || missing="$$missing pigz"; \
	command -v apk >/dev/null 2>&1 || missing="$$missing apk-tools"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "not root: cannot install$$missing; apkperf peers will skip the peers needing them"; exit 0; fi; \
	for p in $$missing; do \
	  apt-cache show $$p >/dev/null 2>&1 || apt-get update -qq; \
	  if apt-cache show $$p >/dev/null 2>&1; then \
	    echo "installing Debian package $$p"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$p >/dev/null || echo "apt-get install $$p failed"; \
	  else echo "Debian's archive here has no package $$p: apkperf peers will skip the peers needing it"; fi; \
	done

perf: venv tools peer-tools
ifeq ($(BASE),)
	$(BIN)/apkperf run --workload small --impl reference,fast,stitched --scenario cold,hot,offline
	$(BIN)/apkperf report
else
	$(BIN)/apkperf compare $(BASE)
endif

# The parser fuzz targets (tests/fuzz) for FUZZ_SECONDS each instead of `make test`'s short
# round, in a process capped at FUZZ_MEMORY_MB of address space (a blow-up is a
# MemoryError, a crash); each target prints how many inputs it tried. A crash fails the run
# with the shrunk input, which hypothesis also keeps in .hypothesis/ and replays first.
FUZZ_SECONDS ?= 60
FUZZ_MEMORY_MB ?= 4096
fuzz: venv
	ulimit -v $$(( $(FUZZ_MEMORY_MB) * 1024 )) && FUZZ_SECONDS=$(FUZZ_SECONDS) \
		$(BIN)/pytest tests/fuzz -p no:xdist -q -s -p no:cacheprovider \
		-W ignore::hypothesis.errors.HypothesisWarning $(PYTEST_ARGS)

# Micro-benchmarks of the hot kernels (tests/bench), stored under .benchmarks; compare the
# last two runs with BENCH_ARGS=--benchmark-compare (or pytest-benchmark compare).
BENCH_ARGS ?=
bench: venv
	$(BIN)/pytest tests/bench -p no:xdist -q --benchmark-only --benchmark-autosave \
		--benchmark-max-time=1 --benchmark-columns=min,median,iqr,rounds $(BENCH_ARGS)

lint: venv
	$(BIN)/ruff check builder perf tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .perf .pytest_cache .hypothesis
