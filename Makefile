# `make test` and `make demo` create .venv when missing and install everything once, in the
# order mmcv needs; stamps in .venv make a second run install nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: test test-fast fuzz docs demo demo2020 data lint bench clean-demo venv chromium
venv: $(VENV)/.installed

$(VENV)/.base:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0 numpy==2.4.6 setuptools==80.9.0 wheel
	touch $@

# mmcv has no wheels: built from source with its ops (about 8 minutes on 2 cores; pip's wheel
# cache makes a rebuild on the same machine instant). scripts/mmcv_build_env.sh picks the CUDA
# ops for this machine's GPU when nvcc and a CUDA torch are present, else the CPU ops.
$(VENV)/.mmcv: $(VENV)/.base
	vars=$$(sh scripts/mmcv_build_env.sh $(BIN)/python) && echo "mmcv build: $$vars" \
		&& env $$vars $(PIP) install --no-build-isolation mmcv==2.1.0
	touch $@

# fashionpedia (the reference AP^{IoU+F1}, for a test) without its scikit-image dependency,
# which only its image viewer uses.
$(VENV)/.deps: $(VENV)/.mmcv requirements.txt
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps fashionpedia==1.1
	touch $@

# openmim downgrades setuptools to 60.2.0: install the package with build isolation, or it
# lands as UNKNOWN.
$(VENV)/.installed: $(VENV)/.deps pyproject.toml imat_kit/_counts.c
	$(PIP) install -e .
	touch $@

# Headless Chromium renders the HTML report in a test; installed where apt-get works as root,
# else that one test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q chromium >/dev/null 2>&1)) ; } \
		|| echo "chromium not installed: the report's render test will skip"

# the whole suite (CI runs it), in 2 worker processes; tests that share a trained checkpoint
# (xdist_group) run in the same worker, so it is trained once
test: $(VENV)/.installed chromium
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup tests

# what is not marked slow: under 3 minutes on 2 cores, for everyday work
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow" tests

# the fuzz suite's long profile: thousands of mutated files through every reader and command
# (make test runs its small seeded profile); the figure goes to benchmarks/RESULTS.md
fuzz: $(VENV)/.installed
	mkdir -p outputs
	$(BIN)/python benchmarks/fuzz.py --json outputs/fuzz.json

# docs/cli.md from the argparse parser (a test fails when it is out of date)
docs: $(VENV)/.installed
	$(BIN)/python -m imat_kit.cli.reference > docs/cli.md.tmp && mv docs/cli.md.tmp docs/cli.md

lint: $(VENV)/.installed
	$(BIN)/ruff check imat_kit tests benchmarks configs

DEMO_DIR ?= outputs/demo
demo: $(VENV)/.installed
	$(BIN)/imat-kit demo --out $(DEMO_DIR) --images 300 --folds 0,1 --iters 360 --seed 0 \
		--jobs 2 --submission submissions/demo.csv

# the same on the synthetic 2020 set: a 2020-layout submission, scored with the 2020 rule
demo2020: $(VENV)/.installed
	$(BIN)/imat-kit demo --year 2020 --out $(DEMO_DIR)2020 --images 300 --folds 0,1 --iters 360 \
		--seed 0 --jobs 2 --submission submissions/demo2020.csv

clean-demo:
	rm -rf $(DEMO_DIR) $(DEMO_DIR)2020 submissions/demo.csv submissions/demo.json \
		submissions/demo2020.csv submissions/demo2020.json

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/rle.py
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/ensemble_submit.py
	$(BIN)/python benchmarks/predict_speed.py
	$(BIN)/python benchmarks/attr_metric.py
	$(BIN)/python benchmarks/pred_check.py
	$(BIN)/python benchmarks/evaluate.py
	$(BIN)/python benchmarks/fusion.py
