# graphfix: `make demo` and `make test` are the quick start; both install what they need into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GRAPHFIX := $(BIN)/graphfix
SAMPLES := $(wildcard sample_models/legacy/*.onnx sample_models/current/*.onnx)
REPAIRED := $(patsubst sample_models/%.onnx,build/repaired/%.onnx,$(SAMPLES))
MODELS ?= $(REPAIRED)

.PHONY: install demo test test-fast lint check samples client-samples fixed-shape-samples deep-samples variant-samples clean verify-ort-table verify-ort-domains bench

install: $(VENV)/.installed

# `make install` (and `make demo`) installs graphfix alone; the test and lint tools come with the targets that use
# them, as the `test` and `dev` extras.
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e . --config-settings editable_mode=compat
	$(BIN)/python -m compileall -q graphfix  # as a regular pip install does; stale files are simply recompiled
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test]' --config-settings editable_mode=compat
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[dev]' --config-settings editable_mode=compat
	touch $@

demo: install
	@echo "== 1. A plain present->past client (what Rust ort / C# / Java do) on Optimum's merged Marian decoder:"
	! $(GRAPHFIX) validate sample_models/legacy/marian.onnx
	@echo
	@echo "== 2. What graphfix check reports, then the repair:"
	! $(GRAPHFIX) check sample_models/legacy/marian.onnx
	@mkdir -p build/demo
	$(GRAPHFIX) repair --force sample_models/legacy/marian.onnx build/demo/marian.onnx
	@echo
	@echo "== 3. The same client on the repaired model; no-cache logits equal the original's:"
	$(GRAPHFIX) validate build/demo/marian.onnx --original sample_models/legacy/marian.onnx
	@echo
	@echo "== 4. What a client feeds at each step, and which onnxruntime loads it (docs/clients.md for each language):"
	$(GRAPHFIX) describe build/demo/marian.onnx

# On every core (pytest-xdist; PYTEST_WORKERS=0 runs in this one process): tests/conftest.py builds the wheel and
# repairs each sample once per run, whichever worker asks first, and starts the longest modules first. --dist loadfile:
# a module runs whole on one worker, so that its module fixtures (venvs, padded models) are made once.
PYTEST_WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: $(VENV)/.test-installed
	$(PYTEST) --durations=10

# The inner loop: every module's behaviour without the slow tier (wheel installs, other Pythons and onnxruntime
# releases, signal and limit suites, fuzzing, big models), which `make test` adds.
test-fast: $(VENV)/.test-installed
	$(PYTEST) -m "not slow"

# ruff and mypy, configured in pyproject.toml; CI runs this after `make test`.
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check graphfix tests bench scripts
	$(BIN)/mypy

# Batch repair, one target per model: `make -j4 check` repairs in parallel, re-runs skip what is up to date and
# replace what is out of date (--force: graphfix never replaces an existing OUT unless told to).
build/repaired/%.onnx: sample_models/%.onnx | install
	@mkdir -p $(@D)
	$(GRAPHFIX) repair --force $< $@

check: install $(MODELS)
	$(GRAPHFIX) check $(MODELS)

# Regenerate sample_models/ with the real exporters, each in its own venv with pinned versions (needs torch).
EXPORT_LEGACY := .venv-export-legacy
EXPORT_CURRENT := .venv-export-current

$(EXPORT_LEGACY)/.installed:
	$(PYTHON) -m venv $(EXPORT_LEGACY)
	$(EXPORT_LEGACY)/bin/pip install --quiet torch==2.13.0 optimum==1.23.3 transformers==4.46.3 'onnx<1.18' 'numpy<2' onnxruntime sentencepiece
	touch $@

$(EXPORT_CURRENT)/.installed:
	$(PYTHON) -m venv $(EXPORT_CURRENT)
	$(EXPORT_CURRENT)/bin/pip install --quiet torch==2.13.0 optimum-onnx==0.1.0 transformers==4.57.6 onnxruntime sentencepiece
	touch $@

samples: $(EXPORT_LEGACY)/.installed $(EXPORT_CURRENT)/.installed
	$(EXPORT_LEGACY)/bin/python sample_models/make_samples.py --exporter legacy --out sample_models/legacy
	$(EXPORT_CURRENT)/bin/python sample_models/make_samples.py --exporter current --out sample_models/current
	$(MAKE) fixed-shape-samples
	$(MAKE) deep-samples

# The legacy Marian at opus-mt's depth (6 decoder layers, the same tiny widths): output that must not grow with depth.
deep-samples: $(EXPORT_LEGACY)/.installed
	$(EXPORT_LEGACY)/bin/python sample_models/make_samples.py --exporter legacy --out build/deep --only marian --decoder-layers 6
	cp build/deep/marian.onnx sample_models/deep/legacy-marian-6-layers.onnx
	cp build/deep/manifest.json sample_models/deep/manifest.json

# The export folders the example clients are tested on (sample_models/exports/: encoder, merged decoder, configs
# only): Marian from the legacy exporter, T5 and M2M100 from the current one; the current Marian is
# exports/current-marian-opset21 (variant-samples).
client-samples: $(EXPORT_LEGACY)/.installed $(EXPORT_CURRENT)/.installed
	$(EXPORT_LEGACY)/bin/python sample_models/make_samples.py --exporter legacy --out sample_models/exports --keep-all --client-files --only marian
	$(EXPORT_CURRENT)/bin/python sample_models/make_samples.py --exporter current --out sample_models/exports --keep-all --client-files --only t5 m2m100

# Decoders exported with one axis left out of the dynamic axes (the exporter fixes it at the dummy's size).
fixed-shape-samples: $(EXPORT_LEGACY)/.installed $(EXPORT_CURRENT)/.installed
	$(EXPORT_CURRENT)/bin/python sample_models/make_samples.py --exporter current --out build/fixed/current-batch --only marian --static-axis batch_size
	$(EXPORT_CURRENT)/bin/python sample_models/make_samples.py --exporter current --out build/fixed/current-source --only marian --static-axis encoder_sequence_length
	$(EXPORT_LEGACY)/bin/python sample_models/make_samples.py --exporter legacy --out build/fixed/legacy-batch --only marian --static-axis batch_size
	cp build/fixed/current-batch/marian.onnx sample_models/fixed-shape/current-marian-batch2.onnx
	cp build/fixed/current-source/marian.onnx sample_models/fixed-shape/current-marian-source16.onnx
	cp build/fixed/legacy-batch/marian.onnx sample_models/fixed-shape/legacy-marian-batch2.onnx

# Every model family graphfix is asked to handle (vision, speech, pix2struct, decoder-only, quantized, fp16, O2, an
# opset-21 export directory), made by the real exporters and onnxruntime/Optimum tools in the same pinned venvs plus
# the two packages they need (Pix2Struct's processor needs Pillow; MatMulNBitsQuantizer imports onnx_ir). Then the
# graphfix of this tree records, per file, IR/opsets/domains, whether onnxruntime loads it, and `check`/`repair`
# outcomes into sample_models/variants/manifest.json and the table in sample_models/README.md.
VARIANTS := sample_models/variants
VARIANT_EXTRAS := pillow==13.0.0 onnx-ir==1.1.0 onnxconverter-common==1.16.0 onnxslim==0.1.98

$(EXPORT_CURRENT)/.variants-installed: $(EXPORT_CURRENT)/.installed
	$(EXPORT_CURRENT)/bin/pip install --quiet $(VARIANT_EXTRAS)
	touch $@

variant-samples: $(EXPORT_LEGACY)/.installed $(EXPORT_CURRENT)/.variants-installed install
	rm -rf $(VARIANTS) sample_models/exports/current-marian-opset2*
	mkdir -p $(VARIANTS)
	$(EXPORT_CURRENT)/bin/python sample_models/make_variants.py export --exporter current --out $(VARIANTS)
	$(EXPORT_LEGACY)/bin/python sample_models/make_variants.py export --exporter legacy --out $(VARIANTS)
	$(BIN)/python sample_models/make_variants.py record --out $(VARIANTS) --graphfix $(GRAPHFIX) \
		--graphfix-commit "$$(git log -1 --format=%h -- graphfix pyproject.toml)" --readme sample_models/README.md

clean:
	rm -rf build .pytest_cache

# Re-measure graphfix/targets/ort_targets.py on the real onnxruntime wheels (installs each release into the runtime cache).
ORT_RELEASES ?= 1.15.1 1.16.3 1.17.3 1.18.1 1.19.2 1.20.1 1.21.1 1.22.1 1.23.2 1.24.4 1.25.1 1.26.0 1.27.0 1.28.0 1.29.0 1.30.0 1.31.1 1.32.0
verify-ort-table: install
	$(BIN)/python scripts/probe_ort_limits.py $(ORT_RELEASES)

# Re-measure graphfix/targets/ort_domains.json: ai.onnx.ml and com.microsoft opsets, contrib ops, and whether the
# loader refuses attributes that became inputs (ReduceMean axes at 18, ...), in each release's own wheel.
verify-ort-domains: install
	$(BIN)/python scripts/probe_ort_domains.py $(ORT_RELEASES)

# Every example client (examples/<lang>/run, the contract of examples/README.md) in every onnxruntime release it
# binds, on the committed repaired sample exports, against examples/python and graphfix's full recompute, and on the
# originals. No torch: it runs in the test venv; each example builds itself and fetches its runtime on first use.
test-examples: $(VENV)/.test-installed
	GRAPHFIX_CLIENT_TESTS=1 $(BIN)/python -m pytest -v -p no:cacheprovider tests/clients/test_every_binding.py

# Then the other real clients on repaired exports (Optimum ORTModelForSeq2SeqLM, transformers.js, a plain
# present->past loop on onnxruntime-node on the newest release and on 1.16.3, onnxruntime-web, OpenVINO and tract),
# checked token for token against PyTorch. Needs torch and node, so it has its own venv and
# tests/clients/js{,-ort116}/node_modules instead of slowing `make test`. The npm installs skip onnxruntime-node's
# postinstall (it only fetches GPU providers): the CPU library ships in the package.
CLIENTS_VENV := .venv-clients
CLIENTS_JS := tests/clients/js
# The same plain client on onnxruntime-node 1.16.3 (bundles libonnxruntime.so.1.16.3, what Rust ort 1.16.3 loads).
CLIENTS_JS_ORT116 := tests/clients/js-ort116
.PHONY: test-clients test-native-examples test-examples

$(CLIENTS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install --quiet torch==2.13.0 optimum-onnx==0.1.0 transformers==4.57.6 onnxruntime pytest -e .
	touch $@

# The other runtimes' Python clients (README.md, Runtimes), pinned to the versions measured; a stamp of their
# own so that an existing .venv-clients gets them too.
CLIENTS_RUNTIMES := openvino==2026.4.1 tract==0.23.9
$(CLIENTS_VENV)/.runtimes-installed: $(CLIENTS_VENV)/.installed
	$(CLIENTS_VENV)/bin/pip install --quiet $(CLIENTS_RUNTIMES)
	touch $@

$(CLIENTS_JS)/node_modules/.installed: $(CLIENTS_JS)/package.json $(CLIENTS_JS)/package-lock.json
	cd $(CLIENTS_JS) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

$(CLIENTS_JS_ORT116)/node_modules/.installed: $(CLIENTS_JS_ORT116)/package.json $(CLIENTS_JS_ORT116)/package-lock.json
	cd $(CLIENTS_JS_ORT116) && npm ci --ignore-scripts --no-audit --no-fund
	ls $(CLIENTS_JS_ORT116)/node_modules/onnxruntime-node/bin/napi-v3/linux/*/libonnxruntime.so.1.16.3 >/dev/null  # the C library 1.16.3 ships
	touch $@

# The JavaScript example a user copies (examples/javascript), installed from its own package.json and lock.
EXAMPLE_JS := examples/javascript
$(EXAMPLE_JS)/node_modules/.installed: $(EXAMPLE_JS)/package.json $(EXAMPLE_JS)/package-lock.json
	cd $(EXAMPLE_JS) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

# Each example's own test runner (cargo test on ort 1.16.3 and ort 2 — the seed's own success test —, mvn test on
# onnxruntime 1.16.3 and current, go test, examples/c/test), on the sample exports repaired by this graphfix.
test-native-examples: $(VENV)/.test-installed
	examples/test-native $(abspath $(GRAPHFIX)) $(abspath $(BIN)/python)

test-clients: test-examples test-native-examples $(CLIENTS_VENV)/.installed $(CLIENTS_VENV)/.runtimes-installed \
		$(CLIENTS_JS)/node_modules/.installed $(CLIENTS_JS_ORT116)/node_modules/.installed \
		$(EXAMPLE_JS)/node_modules/.installed
	GRAPHFIX_CLIENT_TESTS=1 $(CLIENTS_VENV)/bin/python -m pytest -q tests/clients \
		--ignore=tests/clients/test_every_binding.py

# Repair cost next to `cp`, and decode speed of the repaired merged decoder; models generated once into build/bench/
# with the real exporter (needs the exporter venv). Not part of `make test`: timings live here.
bench: install $(EXPORT_CURRENT)/.installed
	status=0; \
	GRAPHFIX_EXPORT_PYTHON=$(abspath $(EXPORT_CURRENT))/bin/python $(BIN)/python bench/run.py || status=1; \
	$(BIN)/python bench/tree.py || status=1; \
	GRAPHFIX_EXPORT_PYTHON=$(abspath $(EXPORT_CURRENT))/bin/python $(BIN)/python bench/proof_costs.py || status=1; \
	exit $$status

# The proof and `check` against their floor (one onnxruntime session and one step) at the benchmark's proof sizes
# (bench/models.py, exported once into build/bench/): repair / bare, validate / bare, check per model, peak RSS.
.PHONY: bench-proof
bench-proof: install $(EXPORT_CURRENT)/.installed
	GRAPHFIX_EXPORT_PYTHON=$(abspath $(EXPORT_CURRENT))/bin/python $(BIN)/python bench/proof_costs.py

# The tree repair alone: 50 model folders copied from sample_models/exports (2 broken), `repair TREE OUT --jobs 2`
# against the sum of the single repairs / 2 (+20 % allowed). Needs no exporter venv.
.PHONY: bench-tree
bench-tree: install
	$(BIN)/python bench/tree.py

# Batch repair, a thin wrapper over one `graphfix repair MODELS OUT` (a tree of model folders, or one model folder):
#   make repair MODELS=models OUT=models-fixed [ARGS="--target-ort 1.16"] [JOBS=4] [REPORT=path.json]
# graphfix goes on past a model folder that fails (nothing of it is written), and writes one JSON report (default
# OUT-report.json) with every folder's result. The run is redone when an input file changed, or when ARGS, MODELS or
# graphfix's version did: a stamp under build/make-repair/ records them. A folder already in OUT is replaced once its
# new version is complete (--force); one that fails keeps its previous output, and make fails with graphfix's exit
# code (3: some failed, see the report), so the next `make repair` runs again. GRAPHFIX=path/to/graphfix uses an
# existing installation instead of installing .venv.
JOBS ?= 1
REPORT ?= $(patsubst %/,%,$(OUT))-report.json
REPAIR_STATE = build/make-repair/$(subst /,_,$(abspath $(OUT)))
REPAIR_NEEDS := $(if $(filter command line environment,$(origin GRAPHFIX)),,install)
.PHONY: repair FORCE

ifneq ($(filter repair,$(MAKECMDGOALS)),)
ifeq ($(filter command line environment,$(origin MODELS)),)
$(error usage: make repair MODELS=<model folder or folder of model folders> OUT=<output folder>)
endif
ifeq ($(strip $(OUT)),)
$(error usage: make repair MODELS=<model folder or folder of model folders> OUT=<output folder>)
endif
endif

repair: $(REPAIR_STATE)/done

# What the outputs were made with, rewritten only when it changes: its time says when ARGS or graphfix changed.
$(REPAIR_STATE)/made-with: FORCE | $(REPAIR_NEEDS)
	@mkdir -p $(@D)
	@echo '$(shell $(GRAPHFIX) --version) ARGS=$(ARGS) MODELS=$(abspath $(MODELS))' > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

$(REPAIR_STATE)/done: $(REPAIR_STATE)/made-with $(shell find $(MODELS) -type f -not -path '*/.graphfix-*' 2>/dev/null)
	@echo "$(GRAPHFIX) repair --force --jobs $(JOBS) $(ARGS) $(MODELS) $(OUT) (report: $(REPORT))"
	@code=0; $(GRAPHFIX) repair --force --json --jobs $(JOBS) $(ARGS) $(MODELS) $(OUT) > $(REPORT).new || code=$$?; \
	mv $(REPORT).new $(REPORT); \
	if [ $$code = 0 ]; then touch $@; else echo "make repair: graphfix exited $$code; see $(REPORT)" >&2; exit $$code; fi

# The sdist and wheel a release ships, checked as PyPI would (twine check --strict): CI runs it. In a venv of its own,
# so that `python -m build` and twine never touch .venv; build makes its own isolated environment for setuptools.
DIST_VENV := .venv-dist
.PHONY: dist
$(DIST_VENV)/.installed:
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/pip install --quiet --disable-pip-version-check build==1.6.1 twine==7.0.0
	touch $@

dist: $(DIST_VENV)/.installed
	rm -rf dist
	$(DIST_VENV)/bin/python -m build --outdir dist .
	$(DIST_VENV)/bin/twine check --strict dist/*

# Fuzzing beyond `make test`'s fixed few hundred cases: thousands of random mutations of every sample (random each
# run; a failure prints the reproducing blob). FUZZ_ARGS passes pytest options, e.g. FUZZ_ARGS=-x.
.PHONY: fuzz
fuzz: $(VENV)/.test-installed
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/end_to_end/test_fuzz.py --hypothesis-show-statistics $(FUZZ_ARGS)

# The declared dependency floors, tested: a venv holding the oldest release pyproject.toml allows of each dependency
# (scripts/dependency_floors.py pins each `name>=X` to `name==X` and checks pip honoured it), and the core tests
# that need no exporter in it (about a minute). `make test` and `make lint` run against the latest releases.
FLOORS_VENV := .venv-floors
FLOOR_TESTS ?= tests/package/test_api.py tests/passes/test_passes.py tests/passes/test_pass_contract.py tests/model/test_refused_models.py \
	tests/proof/test_decode_verdicts.py
.PHONY: test-floors

$(FLOORS_VENV)/.installed: pyproject.toml scripts/dependency_floors.py
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(PYTHON) scripts/dependency_floors.py pyproject.toml > $(FLOORS_VENV)/floors.txt
	$(FLOORS_VENV)/bin/pip install --quiet --disable-pip-version-check -c $(FLOORS_VENV)/floors.txt \
		-e '.[test]' --config-settings editable_mode=compat
	$(FLOORS_VENV)/bin/python scripts/dependency_floors.py --check pyproject.toml
	touch $@

test-floors: $(FLOORS_VENV)/.installed
	$(FLOORS_VENV)/bin/python -m pytest -q $(FLOOR_TESTS)
