#!/usr/bin/env python3
"""The lab on CPU: hcpipe's lab stages vs a faithful Python port of the lab.

Issue 8's table 2. Side by side in one run (the two take turns within every
repetition, so the load of a shared machine falls on both alike):

  hcpipe   `hcpipe run` of pipelines/demo.yaml's stages (same stages, same
           synthetic data) into a fresh cache where only the `dataset` stage is
           cached (a one-stage pipeline with the same stage is run into it first,
           untimed), so the learning stages start cold; per-stage wall times from
           `run --json`, total = wall time of the command.
  lab.py   bench/lab.py (the seed notebook as a script) on the same dataset
           folder with the same epochs; per-stage wall times from its JSON,
           total = wall time of the process (Python start and imports included).

Each figure is the median of --reps runs with min-max. Then both sides' learning
results (train / validation balanced accuracy, soft vote, >= 62 subset, GMM) go
in the same table, and a parity check runs the lab's own test() on hcpipe's
trained weights (`lab.py --check-eval`) and compares with hcpipe's `evaluate`
metrics (mean_loss included): same weights, so they must agree to 1e-5.

The bench pipeline is demo.yaml with its `epochs` / `ae_epochs` params set to
--epochs / --ae-epochs, written to bench/data/lab/lab.yaml, and dataset.yaml its
`dataset` stage alone; caches bench/data/lab/cache-N (git-ignored; cache-0 holds
the dataset lab.py reads; deleted at the next bench run).

Writes the table into BENCHMARKS.md between `<!-- lab-cpu:begin -->` and
`<!-- lab-cpu:end -->`, and the raw samples into bench/data/lab-results.json.

Usage: make bench-lab   (or: python3 bench/lab_cpu.py [--reps 3] [--epochs 3] [--ae-epochs 2])
Standard library only; lab.py runs in bench/.venv-lab (pandas, numpy,
scikit-learn, safetensors; torch from the repository's .venv), which
`make bench-lab` creates.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runner  # noqa: E402  (shared helpers: machine, load, section writer)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "lab"
BENCHMARKS = ROOT / "BENCHMARKS.md"
DEMO = ROOT / "pipelines" / "demo.yaml"
LAB = ROOT / "bench" / "lab.py"
LAB_PYTHON = ROOT / "bench" / ".venv-lab" / "bin" / "python"
HCPIPE = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "hcpipe"
BEGIN, END = "<!-- lab-cpu:begin -->", "<!-- lab-cpu:end -->"

# Table rows: label, hcpipe stages summed, lab.py stage.
ROWS = [
    ("load / crop", ["crop_left", "crop_right", "demographics", "old_validation"], "load"),
    ("CNN left HC", ["cnn_left"], "cnn_left"),
    ("CNN right HC", ["cnn_right"], "cnn_right"),
    ("evaluation + soft vote", ["eval_left", "eval_right", "soft_vote"], "eval"),
    ("autoencoder", ["ae_left"], "ae"),
    ("codes", ["codes_left"], "codes"),
    ("GMM", ["clusters"], "gmm"),
]


def die(msg):
    sys.exit(f"lab_cpu.py: {msg}")


def fmt(s):
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def cell(samples, f=fmt):
    if not samples:
        return "—"
    return f"{f(statistics.median(samples))} ({f(min(samples))}–{f(max(samples))})"


def num(x):
    return f"{x:.3f}"


# The same machine description and load average as the other bench scripts.
machine = runner.machine
loadavg = runner.loadavg


def write_section(section):
    """Put `section` between this table's markers in BENCHMARKS.md."""
    runner.write_section(section, BEGIN, END)


def children_cpu():
    """CPU seconds (user + sys) of every finished child so far, grandchildren included."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd, what):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        die(f"{what} failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr[-3000:]}")
    return p


def timed(cmd, what):
    """`run`, with its wall time and CPU time (of the command and every process it waited for)."""
    cpu, t = children_cpu(), time.perf_counter()
    p = run(cmd, what)
    return p, time.perf_counter() - t, children_cpu() - cpu


def bench_pipeline(epochs, ae_epochs):
    """demo.yaml with its epochs params replaced; fails loudly if demo.yaml changed shape."""
    text = DEMO.read_text()
    for name, value in (("epochs", epochs), ("ae_epochs", ae_epochs)):
        text, n = re.subn(rf"(?m)^(  {name}: )\d+$", rf"\g<1>{value}", text)
        if n != 1:
            die(f"{DEMO}: expected one `  {name}: N` line under params:, found {n}; update bench_pipeline()")
    text = text.replace("name: oasis-demo", "name: oasis-demo-bench", 1)
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / "lab.yaml"
    path.write_text("# Written by bench/lab_cpu.py from pipelines/demo.yaml; do not edit.\n" + text)
    # The same `dataset` stage alone: same op and params, hence the same key (a key
    # does not depend on the pipeline's name or other stages), so running it into a
    # fresh cache leaves lab.yaml with its dataset cached and everything else cold.
    m = re.search(r"(?m)^stages:\n(  dataset:\n(?:    .*\n)+)", text)
    if not m:
        die(f"{DEMO}: no `  dataset:` stage block right after `stages:`; update bench_pipeline()")
    head = text[:m.start()]
    only = DATA / "dataset.yaml"
    only.write_text("# Written by bench/lab_cpu.py from pipelines/demo.yaml; do not edit.\n"
                    + head + "stages:\n" + m.group(1))
    return path, only


def show(cache, pipeline, stage):
    p = run([HCPIPE, "--cache", cache, "show", pipeline, stage, "--json"], f"hcpipe show {stage}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def hcpipe_rep(cache, pipeline, cold, first=False):
    """One `hcpipe run`; `cold`: the stages that must have run (not come from the cache)."""
    cmd = [HCPIPE, "--cache", cache, "run", pipeline, "--json"]
    p, wall, cpu = timed(cmd, "hcpipe run")
    stages = {}
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if "stage" in rec:
                stages[rec["stage"]] = rec
    for s in cold:
        if stages.get(s, {}).get("status") != "ran":
            die(f"stage {s} did not run (status {stages.get(s, {}).get('status')}); its cache should be cold")
    if not first and stages.get("dataset", {}).get("status") == "ran":
        die("the dataset stage ran again; it should have been cached")
    return {"wall": wall, "cpu": cpu, "stages": stages}


def lab_rep(dataset, args, threads):
    cmd = [LAB_PYTHON, LAB, dataset, "--epochs", args.epochs, "--ae-epochs", args.ae_epochs,
           "--threads", threads, "--num-workers", args.num_workers]
    p, wall, cpu = timed(cmd, "bench/lab.py")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    out["cpu"] = cpu
    return out


def dig(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def matched(b):
    """Two clusters' ids are arbitrary: swapping them turns b into 1 - b."""
    return None if b is None else max(b, 1 - b)


def metric_rows(hc, lab):
    """(label, hcpipe value, lab value) from one repetition of each side."""
    hs = hc["stages"]

    def hm(stage, *keys):
        return dig(hs.get(stage, {}), "metrics", *keys)

    lm = lab["metrics"]
    return [
        ("CNN left: train balanced accuracy (best epoch)", hm("cnn_left", "train_balanced_accuracy"),
         dig(lm, "left_train", "balanced_accuracy")),
        ("CNN right: train balanced accuracy (best epoch)", hm("cnn_right", "train_balanced_accuracy"),
         dig(lm, "right_train", "balanced_accuracy")),
        ("CNN left: validation balanced accuracy", hm("eval_left", "validation", "balanced_accuracy"),
         dig(lm, "left_validation", "balanced_accuracy")),
        ("CNN left: validation mean loss", hm("eval_left", "validation", "mean_loss"),
         dig(lm, "left_validation", "mean_loss")),
        ("CNN right: validation balanced accuracy", hm("eval_right", "validation", "balanced_accuracy"),
         dig(lm, "right_validation", "balanced_accuracy")),
        ("CNN left: validation ≥ 62 balanced accuracy", hm("eval_left", "old", "balanced_accuracy"),
         dig(lm, "left_old", "balanced_accuracy")),
        ("soft vote: validation balanced accuracy", hm("soft_vote", "validation", "balanced_accuracy"),
         dig(lm, "soft_vote_validation", "balanced_accuracy")),
        ("GMM on AE codes: train balanced accuracy (raw cluster ids, as the lab)", hm("clusters", "lab", "balanced_accuracy"),
         dig(lm, "gmm_train", "balanced_accuracy")),
        ("GMM: the same, clusters matched to labels (max(b, 1 − b))", matched(hm("clusters", "lab", "balanced_accuracy")),
         matched(dig(lm, "gmm_train", "balanced_accuracy"))),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--ae-epochs", type=int, default=2)
    ap.add_argument("--threads", default="2,1", help="lab.py's torch.set_num_threads, one column each (comma-separated)")
    ap.add_argument("--num-workers", type=int, default=2, help="lab.py's DataLoader workers (the lab: 8)")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    if not HCPIPE.exists():
        die(f"{HCPIPE} is missing: run `make build` first")
    if not LAB_PYTHON.exists():
        die(f"{LAB_PYTHON} is missing: run `make bench-lab` (it creates bench/.venv-lab)")

    started = time.time()
    load_before = loadavg()
    pipeline, dataset_only = bench_pipeline(args.epochs, args.ae_epochs)
    first_cache = DATA / "cache-0"
    for old in DATA.glob("cache-*"):
        shutil.rmtree(old)
    print(f"generating the dataset and a first (untimed) run of {pipeline.relative_to(ROOT)} ...", flush=True)
    t = time.perf_counter()
    warm = hcpipe_rep(first_cache, pipeline, [], first=True)
    print(f"  first run {fmt(time.perf_counter() - t)}; dataset stage {fmt(warm['stages']['dataset']['wall_s'])}",
          flush=True)
    dataset = show(first_cache, pipeline, "dataset")["path"]
    cold = [s for s in warm["stages"] if s != "dataset"]

    threads = [int(x) for x in args.threads.split(",") if x]
    if not threads:
        die("--threads: give at least one thread count, e.g. 2,1")
    hc_reps, lab_by = [], {n: [] for n in threads}
    for i in range(args.reps):
        # Alternate who goes first, so a load spike does not always hit the same side.
        order = ("hcpipe", "lab") if i % 2 == 0 else ("lab", "hcpipe")
        for side in order:
            if side == "hcpipe":
                # A fresh cache holding only the dataset (generated again, untimed):
                # `--force` cannot be used, see BENCHMARKS.md's note under the table.
                cache = DATA / f"cache-{i + 1}"
                if i > 0:  # the previous repetition's (cache-0 holds lab.py's dataset)
                    shutil.rmtree(DATA / f"cache-{i}", ignore_errors=True)
                hcpipe_rep(cache, dataset_only, ["dataset"], first=True)
                hc_reps.append(hcpipe_rep(cache, pipeline, cold))
                print(f"rep {i + 1}: hcpipe {fmt(hc_reps[-1]['wall'])}", flush=True)
            else:
                for n in threads:
                    lab_by[n].append(lab_rep(dataset, args, n))
                    print(f"rep {i + 1}: lab.py, {n} thread(s) {fmt(lab_by[n][-1]['wall'])}", flush=True)
    lab_reps = lab_by[threads[0]]

    # Parity: the lab's test() on hcpipe's weights of the last run.
    parity = {}
    for side in ("left", "right"):
        weights = Path(show(cache, pipeline, f"cnn_{side}")["path"]) / "weights.safetensors"
        metrics = Path(show(cache, pipeline, f"eval_{side}")["path"]) / "metrics.json"
        p = subprocess.run([str(LAB_PYTHON), str(LAB), dataset, "--check-eval", str(weights),
                            "--region", side, "--metrics", str(metrics), "--threads", str(threads[0])],
                           capture_output=True, text=True, cwd=ROOT)
        try:
            parity[side] = json.loads(p.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            die(f"lab.py --check-eval ({side}) printed no JSON (exit {p.returncode}):\n{p.stderr[-3000:]}")
    load_after = loadavg()
    took = time.time() - started

    DATA.mkdir(parents=True, exist_ok=True)
    (DATA.parent / "lab-results.json").write_text(json.dumps(
        {"hcpipe": hc_reps, "lab": {str(n): r for n, r in lab_by.items()}, "parity": parity, "args": vars(args)}, indent=1))

    rows = []
    for label, hc_stages, lab_stage in ROWS:
        hc = [sum(r["stages"][s]["wall_s"] for s in hc_stages) for r in hc_reps]
        labs = " | ".join(cell([r["stages"][lab_stage] for r in lab_by[n]]) for n in threads)
        rows.append(f"| {label} | {cell(hc)} | {labs} |")
    labs = " | ".join(f"**{cell([r['wall'] for r in lab_by[n]])}**" for n in threads)
    rows.append(f"| **total, wall of the command** | **{cell([r['wall'] for r in hc_reps])}** | {labs} |")
    labs = " | ".join(cell([r["stages"]["total"] for r in lab_by[n]]) for n in threads)
    rows.append(f"| *of which the lab's stages (in-script)* | — | {labs} |")
    labs = " | ".join(f"**{cell([r['cpu'] for r in lab_by[n]])}**" for n in threads)
    rows.append(f"| **CPU time of the command (user + sys, all its processes)** | **{cell([r['cpu'] for r in hc_reps])}** | {labs} |")
    ratio_rows = []
    hc_wall, hc_cpu = statistics.median(r["wall"] for r in hc_reps), statistics.median(r["cpu"] for r in hc_reps)
    for n in threads:
        lw = statistics.median(r["wall"] for r in lab_by[n])
        lc = statistics.median(r["cpu"] for r in lab_by[n])
        ratio_rows.append(f"| lab.py, {n} thread{'s' if n > 1 else ''} | {lw / hc_wall:.1f}× | {lc / hc_cpu:.1f}× |")
    dash = " | ".join("—" for _ in threads)
    rows.append(f"| *sum of hcpipe's stage times (they overlap)* | "
                f"{cell([sum(s['wall_s'] for n, s in r['stages'].items() if n in cold) for r in hc_reps])} | {dash} |")
    loader = cell([r["extra"]["loader_pass_s"] for r in lab_reps])
    lab_heads = " | ".join(f"lab.py, {n} thread{'s' if n > 1 else ''}" for n in threads)
    lab_aligns = "|".join("---:" for _ in threads)

    mrows = []
    for k, (label, _, _) in enumerate(metric_rows(hc_reps[0], lab_reps[0])):
        hv = [metric_rows(r, lab_reps[0])[k][1] for r in hc_reps]
        lv = [metric_rows(hc_reps[0], r)[k][2] for r in lab_reps]
        hv, lv = [v for v in hv if v is not None], [v for v in lv if v is not None]
        mrows.append(f"| {label} | {cell(hv, num)} | {cell(lv, num)} |")

    prow = []
    for side, res in parity.items():
        v = res["validation"]
        prow.append(
            f"| {side} | {v['mean_loss']['hcpipe']:.6f} | {v['mean_loss']['lab']:.6f} | "
            f"{v['balanced_accuracy']['hcpipe']:.4f} / {v['balanced_accuracy']['lab']:.4f} | "
            f"{res['max_diff']:.2g} | {'**yes**' if res['agree'] else '**NO**'} |")

    cfg = lab_reps[0]["config"]
    section = f"""
## The lab on CPU: hcpipe vs the lab's Python (issue 8, table 2)

The DL4MI lab on the demo's synthetic dataset ({cfg['n_train']} train / {cfg['n_validation']} validation
subjects, 121×145×121 float32 volumes, 8.5 MB each), {args.epochs} CNN epochs per hippocampus and
{args.ae_epochs} autoencoder epochs, on the CPU. **hcpipe**: `hcpipe run` of the lab's stages
(pipelines/demo.yaml with those epochs, into a fresh cache holding only the `dataset` stage's result);
per-stage wall times from `run --json`. **lab.py**: `bench/lab.py`, the seed notebook's code as a
script (MRIDataset + `torch.load` of every volume at every access, CropLeftHC/CropRightHC with
random_shift=2, DataLoader batch 4 shuffled, train()/test() with the per-epoch evaluation over the
train loader, soft voting, AutoEncoder + trainAE/testAE, compute_dataset_features, sklearn's
GaussianMixture) on the same dataset folder with the same epochs, `torch.set_num_threads(N)` for each N
in {threads},
DataLoader `num_workers={args.num_workers}` (the lab uses 8 with `pin_memory=True`, for a GPU machine;
this one has 2 cores). Median (min–max) of {args.reps} runs each, the two taking turns.

| stage | hcpipe (1 thread per stage, 2 stages at once) | {lab_heads} |
|---|---:|{lab_aligns}|
{chr(10).join(rows)}

How many times hcpipe is faster (medians; wall time depends on the machine's other load, CPU
time much less):

| against | wall of the command | CPU time of the command |
|---|---:|---:|
{chr(10).join(ratio_rows)}

hcpipe rows sum its stages (load / crop = crop_left + crop_right + demographics + old_validation;
evaluation = eval_left + eval_right + soft_vote); lab.py's "evaluation" is the lab's test() on the
validation *and* train loaders for both networks, the ≥ 62 subset and soft voting. One bare pass of
lab.py's train loader (read + crop {cfg['n_train']} volumes, no model) takes {loader}; the lab makes
two such passes per epoch (training, then its evaluation over the train loader), and its
autoencoder and codes stages read them again.

What limits each side: both run the same libtorch kernels (hcpipe's worker links the libtorch of
the venv's torch {TORCH_VERSION}) on 2 shared cores. hcpipe runs every torch stage of the run in
one worker process (`hcpipe-torch --serve`, started with the run), so libtorch is loaded once, not
once per stage (a worker process per stage cost about 0.6 s of CPU per stage, mostly system
time loading libtorch's libraries); each job has its own CPU generator and thread count, so its bytes are those of a
worker process of its own (src/torch_worker/src/rng.rs). It evaluates in small batches (the
per-epoch evaluation over the training split, and `evaluate` and `extract_codes` without a
`batch_size`: 4 patches for the CNN, 1 for the AE), about twice as fast per patch on this CPU as
the 32 the lab uses, whose activations overflow the caches. Its 3-D max pooling, a fifth of its
CPU time with libtorch's plain kernel, goes through libtorch's channels-last kernel (vectorised
along the channels; under a gradient only for the indices, the maxima gathered at them): the same
maxima, indices and gradients to the byte (src/torch_worker/src/models/layers.rs), and the worker
keeps the memory libtorch frees at every step instead of faulting it in again (about half of its
system time). It crops once (`crop` stores the
patches grown by the shift, 34×44×34, and the worker draws the random shift from memory) where
the lab's DataLoader re-reads and re-crops every 8.5 MB volume at every pass (in
{args.num_workers} worker processes, forked again for every pass). And it runs independent stages
at once on the 2 cores (cnn_left, cnn_right and ae_left ask for 1 CPU each, so each trains with 1
thread; the thread count is in their keys), the lab one stage after the other, so hcpipe's stage
times overlap and its total is less than their sum. It starts the stage with the longest expected
path to the end first (src/exec/priority.rs): the autoencoder chain (ae_left, codes_left,
clusters, report) beside one CNN, the other CNN when that one is done, so neither core idles
until the end; the crops ask for 1 CPU each and run side by side. What is left: each training
stage runs on one thread, so the run lasts at least as long as the autoencoder chain (or two
CNNs one after the other), about half of hcpipe's CPU time; and the 2 cores are shared with
other processes on this machine, which costs hcpipe's two stages at once more than the lab's
one thread. With 2 intra-op threads on 2 cores that other processes
also use, the lab's libtorch burns CPU time in its thread pool waiting for the other thread (once
measured: 2 threads, 77 s of CPU for 82 s wall; 1 thread, 14 s of CPU for 21 s) and its times swing
from run to run.

Learning results (same hyper-parameters and seed 0 on both sides, but different random streams
— initialisation, shuffling, shifts, dropout — so close but not equal; median (min–max) over the
runs, which repeat exactly on each side). GMM cluster ids are arbitrary, so a raw balanced
accuracy b and 1 − b are the same clustering:

| result | hcpipe | lab.py ({threads[0]} threads) |
|---|---:|---:|
{chr(10).join(mrows)}

Parity on the same weights: the lab's own `test()` (CustomNetwork `load_state_dict(strict=True)` of
hcpipe's `weights.safetensors`, validation loader batch 32, unshifted crop from the `.pt` volumes)
against hcpipe's `evaluate` metrics.json, last run:

| network | hcpipe mean_loss | lab test() mean_loss | balanced accuracy hcpipe / lab | max diff (all metrics, ≥ 62 too) | agree (≤ 1e-5) |
|---|---:|---:|---:|---:|---|
{chr(10).join(prow)}

- Machine: {machine()}
- Load average (1, 5, 15 min): {load_before} before, {load_after} after — other people were using
  this machine, so absolute figures are noisy; compare columns, not runs.
- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')} UTC; the whole script took {took / 60:.1f} min.
- Versions: {run([HCPIPE, '--version'], 'hcpipe --version').stdout.strip()}; torch {TORCH_VERSION} (both sides on the CPU: lab.py device {cfg['device']}); Python {platform.python_version()}.
- Reproduce: `make build && make bench-lab` (= `python3 bench/lab_cpu.py --reps {args.reps} --epochs {args.epochs} --ae-epochs {args.ae_epochs}`).
"""
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"written to {BENCHMARKS}")
    bad = [s for s, r in parity.items() if not r["agree"]]
    if bad:
        die(f"parity: lab test() and hcpipe evaluate disagree for {', '.join(bad)} (see the table)")


TORCH_VERSION = "?"

if __name__ == "__main__":
    try:
        TORCH_VERSION = subprocess.run(
            [str(LAB_PYTHON), "-c", "import torch; print(torch.__version__)"],
            capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        pass
    main()
