# hcpipe — the two commands a newcomer needs are `make demo` and `make test`.
# Both bootstrap everything: a Python venv holding PyTorch's libtorch (for the
# `hcpipe-torch` worker), then a release build of the runner and the worker.

SHELL := /bin/bash
VENV := $(CURDIR)/.venv
TORCH_VERSION := 2.11.0
TORCH_STAMP := $(VENV)/.torch-$(TORCH_VERSION)
# moto in server mode: the S3 server the remote-cache tests start on 127.0.0.1.
MOTO_VENV := $(CURDIR)/.venv-moto
MOTO_VERSION := 5.2.5
MOTO_STAMP := $(MOTO_VENV)/.moto-$(MOTO_VERSION)
PYTHON ?= python3

# tch's build script finds libtorch through the venv's python; VIRTUAL_ENV
# alone is not enough, its bin must come first on PATH.
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)
export VIRTUAL_ENV := $(VENV)

.PHONY: all build demo paper-demo test test-s3 test-services lint fmt clean bench bench-runner bench-hash bench-demo bench-lab bench-scale scale-cache bench-slurm-scale bench-remote gpu-bundle torch soak fuzz fuzz-cache

all: build

$(TORCH_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q torch==$(TORCH_VERSION)
	touch $@

torch: $(TORCH_STAMP)

# A failed install only makes the remote tests skip (with a message).
$(MOTO_STAMP):
	-$(PYTHON) -m venv $(MOTO_VENV) && $(MOTO_VENV)/bin/pip install --disable-pip-version-check -q 'moto[s3,server]==$(MOTO_VERSION)' && touch $@

build: $(TORCH_STAMP)
	cargo build --release --workspace

demo: build
	target/release/hcpipe run pipelines/demo.yaml
	@echo; echo "results (validation split; old = the subjects aged 62 and over):"
	@target/release/hcpipe show pipelines/demo.yaml | sed -n '/^stage  *set/,$$p'

# The paper table (issue 16) on synthetic data: 3 folds × 2 seeds of both
# CNNs, soft vote, AE + GMM per fold, then mean ± SD over folds and seeds.
paper-demo: build
	target/release/hcpipe run pipelines/paper-demo.yaml
	@echo; echo "the paper table (mean ± SD over folds and seeds) on the test set:"
	@cat "$$(target/release/hcpipe show pipelines/paper-demo.yaml table | sed -n 's/^  path: //p')/table.md"

# The browser test needs Chromium and the Slurm tests a one-node Slurm; both
# scripts are idempotent, need root to install, and the tests skip with a
# message where they cannot run. The remote-cache tests (tests/remote.rs)
# start their own S3 server, moto, from its venv .venv-moto (made here).
test-services: $(MOTO_STAMP)
	-scripts/ensure-chromium
	-scripts/slurm-local start

test: build test-services
	cargo test --release --workspace

# The remote-cache tests (tests/remote.rs) against a real S3-compatible
# server instead of moto: Garage 2.5.0 (crates.io), a self-hosted S3 server
# that labs run. scripts/s3-garage builds it once into .tools/garage
# (`cargo install`, long the first time), starts one node on 127.0.0.1 with
# a throwaway data folder, makes a key and a bucket, runs the tests with
# HCPIPE_TEST_S3_* set (each test in a prefix of its own) and stops the
# server, also when they fail. Garage ignores `If-None-Match: *` on PUT: the
# tests expect hcpipe to find that out and warn (README, remote cache).
test-s3:
	scripts/s3-garage cargo test --release --test lib remote

# Long reliability checks, outside `make test`.
soak: build
	HCPIPE_SOAK_KILLS=100 cargo test --release --test lib soak -- --nocapture

# The randomized differential check of the cache (tests/differential.rs,
# RELIABILITY.md): random pipelines and edit sequences, every cached stage
# compared with a clean run, for FUZZ_SECONDS (default 1800) from a random
# seed; prints sequences, steps, mismatches and wall time, and a shrunk
# reproduction for each kind of mismatch. `make test` runs it for 30 s.
# (FUZZ_SECONDS given on the command line or in the environment wins over
# the 900 that `make fuzz` defaults to below.)
FUZZ_CACHE_SECONDS = $(if $(filter command line environment,$(origin FUZZ_SECONDS)),$(FUZZ_SECONDS),1800)
fuzz-cache:
	HCPIPE_DIFF_SECONDS=$(FUZZ_CACHE_SECONDS) HCPIPE_DIFF_SEED=random HCPIPE_DIFF_KEEP_GOING=1 cargo test --release --test lib differential -- --nocapture

# Fuzzing (cargo-fuzz on stable via RUSTC_BOOTSTRAP): the pipeline parser
# and the .pt reader, FUZZ_SECONDS each. The corpora live in fuzz/corpus.
FUZZ_SECONDS ?= 900
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run pipeline corpus/pipeline -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run pt_reader corpus/pt_reader -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048

# The files a GPU machine needs for bench/gpu_run.sh (issue 8, table 3): the
# runner, the worker and the worker's test binary, stripped, in .devrun/ (a
# GPU machine brings its own torch; the script points LD_LIBRARY_PATH at it).
gpu-bundle: build
	cargo test --release -p hcpipe-torch --no-run
	mkdir -p .devrun
	strip -o .devrun/hcpipe target/release/hcpipe
	strip -o .devrun/hcpipe-torch target/release/hcpipe-torch
	strip -o .devrun/worker-tests $$(ls -t target/release/deps/worker-* | grep -v '\.d$$' | head -1)

# The module-cycle check (tests/module_graph.rs) needs only std: rustc builds
# it in a second or two, without the crates `cargo test` would build first.
lint:
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings
	@mkdir -p target
	CARGO_MANIFEST_DIR=$(CURDIR) rustc --edition 2021 --test tests/module_graph.rs -o target/module-graph
	target/module-graph -q

# Benchmarks (BENCHMARKS.md): runner overhead vs DVC and Snakemake, hashing
# throughput, and the demo pipeline's time and memory high-water mark.
bench: bench-runner bench-hash bench-demo

bench-runner:
	cargo build --release
	$(PYTHON) bench/runner.py

bench-hash:
	$(PYTHON) bench/hash.py

# The lab on CPU vs a port of the lab's Python (BENCHMARKS.md, table 2). The
# port needs pandas, numpy, scikit-learn and safetensors: they go into their own
# venv, bench/.venv-lab, which sees the torch of $(VENV) through a .pth file
# (no second 4.6 GB torch download).
LAB_VENV := $(CURDIR)/bench/.venv-lab
LAB_STAMP := $(LAB_VENV)/.lab-deps-1

$(LAB_STAMP): $(TORCH_STAMP)
	$(PYTHON) -m venv $(LAB_VENV)
	$(LAB_VENV)/bin/pip install --disable-pip-version-check -q numpy==2.4.6 pandas==3.1.1 scikit-learn==1.9.1 safetensors==0.8.0
	readlink -f $(VENV)/lib/python3*/site-packages > "$$($(LAB_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/hcpipe-torch-venv.pth"
	$(LAB_VENV)/bin/python -c 'import torch, numpy, pandas, sklearn, safetensors'
	touch $@

# The demo pipeline: cold and no-op wall time, peak RSS (BENCHMARKS.md, table 4).
bench-demo: build
	$(PYTHON) bench/demo.py

# Planning and running 1,000 to 100,000-stage pipelines (issue 15): status,
# dry-run, first and no-op run, medians and peak RSS (BENCHMARKS.md, "Scale").
# The 1,000,000-stage row's no-op run uses the cache `make scale-cache` made
# (when SCALE_CACHE holds one): that first run alone takes over an hour here.
bench-scale:
	cargo build --release
	$(PYTHON) bench/scale.py --label grid --max-first-run 100000 --first-timeout 1800 \
	  $(if $(wildcard $(SCALE_CACHE)/first.json),--made-cache 1000000=$(SCALE_CACHE))

# The first run of the 1,000,000-stage scale pipeline, kept in SCALE_CACHE with
# its figures (first.json) for bench-scale: over an hour on 2 cores, ~17 GB.
SCALE_CACHE ?= $(HOME)/.cache/hcpipe/scale-1m
scale-cache:
	cargo build --release
	$(PYTHON) bench/scale.py --make-cache 1000000 --cache-dir $(SCALE_CACHE)

# A 1,000-member matrix on scripts/slurm-local (issues 15, 16): sbatch calls,
# submit time, squeue calls per poll, slurmctld RPCs (BENCHMARKS.md, "Slurm at
# scale"). As root; BASELINE=path/to/other/hcpipe measures that build too.
bench-slurm-scale:
	cargo build --release
	$(PYTHON) bench/slurm_scale.py $(if $(BASELINE),--baseline $(BASELINE))

# The remote cache (issue 17) against moto on 127.0.0.1: push/pull of the
# demo's cache and of a 1 GiB artifact, pull + run vs a cold run
# (BENCHMARKS.md, "The remote cache").
bench-remote: build $(MOTO_STAMP)
	$(PYTHON) bench/remote.py

bench-lab: build $(LAB_STAMP)
	$(PYTHON) bench/lab_cpu.py

clean:
	cargo clean
