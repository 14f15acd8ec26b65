# Two entry points on a fresh machine: `make demo` and `make test`.
# Both create .venv and install slimlab into it on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch: installed first, so the project's torch range pulls nothing more.
TORCH ?= torch==2.13.0
# Detection (Ultralytics, AGPL-3.0) lives in its own environment: torchvision's registry wheel
# needs the registry's CUDA-build torch (it runs on the CPU too), which `make demo` does without.
# --isolated: pip ignores PIP_FIND_LINKS and its CPU torch wheel, whose torchvision ops fail to load.
DETECT_VENV := .venv-detect
DETECT_BIN := $(DETECT_VENV)/bin
DETECT_TORCH ?= torch==2.13.0 torchvision==0.28.0
# The YOLOv5 repository's code (the `yolov5` family, AGPL-3.0): its package pins an old
# huggingface-hub and pulls boto3, sahi, roboflow, tensorboard...; installed with --no-deps, plus
# the two imports its model code needs that Ultralytics does not bring (engine/detect/yolov5/compat.py
# stands in for setuptools' removed pkg_resources).
YOLOV5_PACKAGE ?= yolov5==7.0.14
YOLOV5_NEEDS ?= pandas seaborn

.PHONY: setup setup-detect setup-litert tools demo demo-detect test test-core test-detect lint bench bench-detect \
	verify-arm gpu-check

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

$(DETECT_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(DETECT_VENV)
	$(DETECT_BIN)/pip install -q --isolated --upgrade pip
	$(DETECT_BIN)/pip install -q --isolated $(DETECT_TORCH)
	$(DETECT_BIN)/pip install -q --isolated -e ".[detect,deploy-detect,dev]"
	$(DETECT_BIN)/pip install -q --isolated --no-deps $(YOLOV5_PACKAGE)
	$(DETECT_BIN)/pip install -q --isolated $(YOLOV5_NEEDS)
	touch $@

setup-detect: $(DETECT_VENV)/.installed

# LiteRT INT8 export of detection models (about 1 GB more, with jax): not part of setup-detect.
$(DETECT_VENV)/.litert: $(DETECT_VENV)/.installed
	$(DETECT_BIN)/pip install -q --isolated -e ".[detect,deploy-detect,deploy-litert,dev]"
	touch $@

setup-litert: $(DETECT_VENV)/.litert

demo: setup
	$(BIN)/slimlab --batch presets/demo.yaml

demo-detect: setup-detect
	$(DETECT_BIN)/slimlab --batch presets/yolo_demo.yaml

# tmux drives the end-to-end workbench test; without it that test is skipped with the reason.
tools:
	@command -v tmux >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq tmux) >/dev/null 2>&1 \
		|| echo "tmux could not be installed: the end-to-end workbench test will be skipped"

# The detection environment installs (network and disk) while the core tests run (CPU).
test:
	$(MAKE) -j2 test-core setup-detect
	$(MAKE) test-detect

test-core: setup tools
	$(BIN)/ruff check engine tui tests benchmarks verify
	$(BIN)/python -m pytest -q -n 2 -m "not detect"

# The detection and torchvision tests, for real, in the detection environment: each module in a
# process of its own, two at a time (tests/run_each.py says why).
DETECT_TESTS = $(shell grep -l "mark.detect" tests/test_*.py)
test-detect: setup-detect
	$(DETECT_BIN)/python tests/run_each.py --jobs 2 $(DETECT_TESTS) -- -q -m detect

lint: setup
	$(BIN)/ruff check engine tui tests benchmarks verify

# timm_prune.py needs timm and torch-pruning: it runs with the detection benchmarks.
# recipe_figures.py reads photos that scikit-learn, matplotlib and Ultralytics ship: it runs with the
# detection benchmarks too.
bench: setup
	for b in $(filter-out benchmarks/timm_prune.py benchmarks/recipe_figures.py,$(wildcard benchmarks/*.py)); do $(BIN)/python $$b || exit 1; done

# The ARM path under emulation (not part of test or CI): the fp32 and INT8 (int8 activations) files
# of a detection and a classification run, on an arm64 Debian root (debootstrap, first stage)
# run by qemu-aarch64-static with the registry's aarch64 onnxruntime wheel, compared with x86.
# Needs root for debootstrap (and apt-get when debootstrap or qemu-user-static are missing); the
# root (about 370 MB) is kept in .arm/ for the next run. Exit 2 says why it cannot run here.
verify-arm: setup-detect
	$(DETECT_BIN)/python verify/arm.py --root .arm/root --work .arm/work

# Detection benchmarks (and timm's CNNs beside Torch-Pruning) run in the detection environment.
bench-detect: setup-detect
	$(DETECT_BIN)/pip install -q --isolated "torch-pruning==1.6.1" scikit-image scikit-learn
	for b in benchmarks/detect/*.py benchmarks/timm_prune.py benchmarks/recipe_figures.py; do $(DETECT_BIN)/python $$b || exit 1; done

# The CUDA paths in one table (AMP, sparse with AMP, memory lines, detection AMP, ORT CUDA, cudnn):
# the detection environment holds the CUDA build of torch. Without CUDA it says so and exits 0.
gpu-check: setup-detect
	$(DETECT_BIN)/python benchmarks/gpu_check.py
