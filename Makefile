# halsal: two commands from a fresh clone.
#   make run   - create .venv, run the default (synthetic, offline) workflow, write reports/report.html
#   make test  - create .venv, run the test suite
#   make photos - optional: the reduced real photographs of ../shared/data on the ImageNet-pretrained
#                EfficientNet-Lite0 (config/photos.yaml, under 2 hours on a 2-core CPU), writes
#                reports/photos.html and the numbers of docs/results-photos.md (its generated block, timed)
#   make photos-scratch - the older from-scratch AlexNet at 64 px (config/photos-scratch.yaml,
#                docs/results-photos-scratch.md)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= all
CONFIG ?= config/config.yaml
# Caches that matplotlib and snakemake would otherwise write under ~.
export MPLCONFIGDIR   ?= $(CURDIR)/.cache/matplotlib
export XDG_CACHE_HOME ?= $(CURDIR)/.cache

.PHONY: run photos photos-scratch test test-fast lint dryrun-paper bench gpu-check gpu-wheels clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES) --configfile $(CONFIG)
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --report reports/report.html
	@echo "Report: reports/report.html"

# Real photographs, reduced (GitHub issues 10 and 17; docs/results-photos.md): read in place from
# ../shared/data, never copied. Shares results/ with `run`.
PHOTOS_CONFIG ?= config/photos.yaml
PHOTOS_DOC    ?= docs/results-photos.md
PHOTOS_IMAGES ?= results-photos
PHOTOS_DATA   := ../shared/data
photos-scratch:
	$(MAKE) photos PHOTOS_CONFIG=config/photos-scratch.yaml PHOTOS_DOC=docs/results-photos-scratch.md \
	  PHOTOS_IMAGES=results-photos-scratch
photos: $(STAMP)
	@for d in flowers102 cub200 tiny_imagenet; do test -d $(PHOTOS_DATA)/$$d/images || { \
	  echo "make photos: $(PHOTOS_DATA)/$$d/images is missing; config/photos.yaml reads the reduced photographs" \
	       "from $(PHOTOS_DATA) beside the checkout (see docs/results-photos.md)" >&2; exit 2; }; done
	@start=$$(date +%s) && \
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES) --configfile $(PHOTOS_CONFIG) && \
	$(BIN)/snakemake --cores 1 --configfile $(PHOTOS_CONFIG) --report reports/photos.html && \
	$(BIN)/python -m halsal publish-md --markdown results/report/results.md --doc $(PHOTOS_DOC) \
	  --images-dir $(PHOTOS_IMAGES) --command "make photos" --elapsed-s $$(( $$(date +%s) - start )) \
	  --elapsed-note "the workflow and its report; creating .venv not included"
	@echo "Report: reports/photos.html; results: $(PHOTOS_DOC) (its generated block)"

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/snakemake --lint

dryrun-paper: $(STAMP)
	$(BIN)/snakemake -n --quiet rules --configfile config/paper.yaml

# The CPU benchmarks of bench/README.md (each a few minutes at most on a 2-core CPU); the
# saliency-lever and Step-1 studies need a finished `make run` tree and run by hand.
bench: $(STAMP)
	$(BIN)/python bench/bench_decode.py
	$(BIN)/python bench/bench_train_input.py
	$(BIN)/python bench/bench_step.py --batch 8 --steps 2 --rounds 2 --threads 1
	$(BIN)/python bench/bench_startup.py

# Everything that needs a CUDA GPU (GPU tests, DALI mixed decode, step benchmark), as one
# markdown table for docs/benchmarks.md. Uses the machine's own $(PYTHON) with its torch, not
# .venv (no $(STAMP)). The packages it lacks come from wheels in .whl/, fetched by
# `make gpu-wheels` for GPU_PYTHON_VERSION (the GPU machine's Python), one package per pip
# call, and installed one per call (a bad wheel blocks only what needs it); gpu-check fetches
# them itself first where an index is reachable. Without an NVIDIA device it says so and
# exits 0; with one that torch cannot use it prints torch's reason and exits 1.
GPU_PYTHON_VERSION ?= 3.12
gpu-wheels:
	$(PYTHON) bench/gpu_check.py --fetch --python-version $(GPU_PYTHON_VERSION)

gpu-check:
	-$(PYTHON) bench/gpu_check.py --fetch --python-version $(GPU_PYTHON_VERSION)
	$(PYTHON) bench/gpu_check.py

clean:
	rm -rf results logs benchmarks reports/report.html reports/photos.html .snakemake
