#!/usr/bin/env python3
"""`make demo`'s pipeline timed: issue 8's table 4 (memory high-water mark of a full run).

Three cold-cache runs of pipelines/demo.yaml (each into a fresh cache under
bench/data/demo/), each followed by five no-op re-runs, under GNU time: wall
time, and the maximum resident set of any process of the run (GNU time's %M:
wait4 reports the largest of the command and the descendants it waited for,
in practice a `hcpipe-torch` worker). Stage times are the stages' own wall
times from `run --json`. Writes the section between `<!-- demo:begin -->` and
`<!-- demo:end -->` in BENCHMARKS.md.

Usage: make build && python3 bench/demo.py [--reps 3] [--noop 5]
Standard library only; needs /usr/bin/time (GNU time).
"""

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab_cpu as lc  # noqa: E402  (fmt, cell, machine, loadavg; lc.runner writes BENCHMARKS.md)

ROOT = Path(__file__).resolve().parent.parent
HCPIPE = ROOT / "target" / "release" / "hcpipe"
PIPELINE = ROOT / "pipelines" / "demo.yaml"
WORK = ROOT / "bench" / "data" / "demo"
BEGIN, END = "<!-- demo:begin -->", "<!-- demo:end -->"


def timed_run(cache):
    """One `hcpipe run` under GNU time: (wall s, peak RSS MiB, {stage: record})."""
    cmd = ["/usr/bin/time", "-f", "%M", str(HCPIPE), "run", str(PIPELINE),
           "--cache", str(cache), "--json"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"demo.py: {' '.join(cmd)} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    rss_kib = int(p.stderr.strip().splitlines()[-1])
    stages = {}
    for line in p.stdout.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "stage" in rec:
            stages[rec["stage"]] = rec
    return wall, rss_kib / 1024, stages


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--noop", type=int, default=5)
    a = ap.parse_args()
    if not HCPIPE.is_file():
        sys.exit("demo.py: target/release/hcpipe is missing; run `make build` first")
    if not Path("/usr/bin/time").is_file():
        sys.exit("demo.py: needs GNU time at /usr/bin/time (apt-get install time)")
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = lc.loadavg()
    cold, rss, noop, per_stage, order = [], [], [], {}, []
    votes = []
    for rep in range(1, a.reps + 1):
        cache = WORK / f"cache-{rep}"
        shutil.rmtree(cache, ignore_errors=True)
        wall, peak, stages = timed_run(cache)
        ran = [n for n, s in stages.items() if s.get("status") == "ran"]
        if len(ran) != len(stages):
            sys.exit(f"demo.py: a cold run did not run every stage: {sorted(set(stages) - set(ran))}")
        cold.append(wall)
        rss.append(peak)
        for name, s in stages.items():
            if name not in per_stage:
                order.append(name)
            per_stage.setdefault(name, []).append(s.get("wall_s") or 0.0)
        vote = (stages.get("soft_vote", {}).get("metrics") or {}).get("validation") or {}
        votes.append(vote.get("balanced_accuracy"))
        for _ in range(a.noop):
            w, _, again = timed_run(cache)
            if any(s.get("status") == "ran" for s in again.values()):
                sys.exit("demo.py: a no-op re-run ran a stage")
            noop.append(w)
        print(f"rep {rep}: cold {wall:.2f} s, peak RSS {peak:.0f} MiB", file=sys.stderr)
    mib = lambda x: f"{x:.0f} MiB"  # noqa: E731
    rows = [
        f"| `make demo` pipeline, cold cache, wall | {lc.cell(cold)} |",
        f"| peak RSS of any process (a torch worker) | {lc.cell(rss, mib)} |",
        f"| no-op re-run ({len(noop)} runs) | {lc.cell(noop)} |",
    ] + [f"| stage `{n}` | {lc.cell(per_stage[n])} |" for n in order]
    same = len(set(votes)) == 1
    bacc = ", ".join("—" if b is None else f"{b:.3f}" for b in (votes[:1] if same else votes))
    section = f"""
## The whole lab on CPU: `pipelines/demo.yaml` (issue 8, table 4)

{a.reps} cold-cache runs of the demo pipeline (68 synthetic subjects, 6 CNN epochs, 4 AE epochs),
each followed by {a.noop} no-op re-runs, release build, default `--jobs` (the cores). Peak RSS is GNU
time's maximum resident set of any process of the run: a `hcpipe-torch` worker (libtorch with its
CUDA libraries mapped); the runner itself stays under 10 MiB. Stage times are the stages' own
wall times (`run --json`); the two CNNs and the AE run two at a time on 2 cores, each stage in a
worker process of its own (the CPU default). Median (min–max).

| measure | median (min–max) |
|---|---|
{chr(10).join(rows)}

Soft vote, validation balanced accuracy: {bacc}{f" in all {len(votes)} runs (CPU training is seeded and bit-reproducible)" if same else " (the runs differ)"}.

- Machine: {lc.machine()}
- Load average (1, 5, 15 min): {load_before} before, {lc.loadavg()} after.
- Date: {started:%Y-%m-%d %H:%M} UTC; took {(datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60:.1f} min.
- Reproduce: `make build && python3 bench/demo.py` (caches in bench/data/demo/, git-ignored).
"""
    lc.runner.write_section(section, BEGIN, END)
    print(section)
    print(f"written to {lc.BENCHMARKS}", file=sys.stderr)


if __name__ == "__main__":
    main()
