#!/usr/bin/env python3
"""Hashing throughput: hcpipe's `hash_file` (Criterion, benches/hash.rs) and b3sum.

Issue 8, table 4 (hashing): blake3 of a 1 GiB file from the page cache, on one
core and on every core; the target is >= 2.5 GB/s on one core. Runs
`cargo bench --bench hash`, reads Criterion's estimates, times `b3sum` on the
same file (wall time and CPU time, median of N), and writes the figures into
BENCHMARKS.md between `<!-- hash:begin -->` and `<!-- hash:end -->`.

b3sum: the one on PATH, else bench/.venv/bin/b3sum, else it is installed
there with `cargo install b3sum --root bench/.venv`.

Usage: make bench-hash   (or: python3 bench/hash.py [--reps N])
"""

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runner  # noqa: E402  (shared helpers: machine, load, section writer)

ROOT = runner.ROOT
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BIG = runner.DATA / "big.bin"
GB = 1e9
BEGIN, END = "<!-- hash:begin -->", "<!-- hash:end -->"


def find_b3sum():
    for cand in [shutil.which("b3sum"), runner.VENV / "bin" / "b3sum"]:
        if cand and Path(cand).exists():
            return str(cand)
    print("installing b3sum into bench/.venv (cargo install; a few minutes)", flush=True)
    runner.sh(["cargo", "install", "--quiet", "--locked", "b3sum", "--root", runner.VENV])
    return str(runner.VENV / "bin" / "b3sum")


def run_b3sum(b3sum, args, reps):
    """Wall and CPU (user + system) seconds of `b3sum ARGS big.bin`, per run."""
    wall, cpu = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        p = subprocess.Popen([b3sum, *args, str(BIG)], stdout=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall.append(time.perf_counter() - t0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            runner.die(f"{b3sum} {' '.join(args)} {BIG} exited {p.returncode}")
        cpu.append(ru.ru_utime + ru.ru_stime)
    return wall, cpu


def criterion_results():
    """{full_id: (median_ns, lower_ns, upper_ns)} from target/criterion/**/new/."""
    out = {}
    for bench in (TARGET / "criterion").glob("**/new/benchmark.json"):
        try:
            meta = json.loads(bench.read_text())
            est = json.loads((bench.parent / "estimates.json").read_text())["median"]
        except (OSError, ValueError, KeyError) as e:
            runner.die(f"cannot read Criterion's results in {bench.parent}: {e}")
        ci = est["confidence_interval"]
        out[meta["full_id"]] = (est["point_estimate"], ci["lower_bound"], ci["upper_bound"])
    return out


def gbps(seconds):
    return (1 << 30) / GB / seconds


def crit_cell(r):
    med, lo, hi = r
    # A shorter time is a higher throughput: the interval's ends swap.
    return f"{gbps(med / 1e9):.2f} ({gbps(hi / 1e9):.2f}–{gbps(lo / 1e9):.2f})"


def sample_cell(samples):
    return (
        f"{gbps(statistics.median(samples)):.2f} "
        f"({gbps(max(samples)):.2f}–{gbps(min(samples)):.2f})"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7, help="runs of b3sum per mode")
    ap.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    runner.ensure_data()
    b3sum = find_b3sum()
    load_before = runner.loadavg()
    started = time.time()
    # Old results would pass for new ones if a function were renamed.
    shutil.rmtree(TARGET / "criterion" / "hash_file", ignore_errors=True)
    shutil.rmtree(TARGET / "criterion" / "cpu", ignore_errors=True)
    env = dict(os.environ, HCPIPE_BENCH_FILE=str(BIG))
    p = subprocess.run(
        ["cargo", "bench", "--bench", "hash", "--", "--noplot"], cwd=ROOT, env=env
    )
    if p.returncode != 0:
        runner.die(f"`cargo bench --bench hash` exited {p.returncode}")
    crit = criterion_results()
    b3_one = run_b3sum(b3sum, ["--num-threads", "1"], args.reps)
    b3_all = run_b3sum(b3sum, [], args.reps)
    elapsed = time.time() - started
    load_after = runner.loadavg()

    def c(full_id):
        r = crit.get(full_id)
        return crit_cell(r) if r else "—"

    rows = [
        "| what | one core, wall | one core, CPU time | all cores, wall |",
        "|---|---:|---:|---:|",
        f"| `hash_file` (mmap, `update_rayon`) | {c('hash_file/one_core')} | {c('cpu/hash_file:one_core')} | {c('hash_file/all_cores')} |",
        f"| `b3sum` | {sample_cell(b3_one[0])} | {sample_cell(b3_one[1])} | {sample_cell(b3_all[0])} |",
    ]
    strat = ["| strategy (one thread, CPU time) | GB/s |", "|---|---:|"]
    for full_id in sorted(k for k in crit if k.startswith("cpu/strategy:")):
        strat.append(f"| `{full_id.split(':', 1)[1]}` | {crit_cell(crit[full_id])} |")
    one_cpu = crit.get("cpu/hash_file:one_core")
    verdict = ""
    if one_cpu:
        v = gbps(one_cpu[0] / 1e9)
        verdict = (
            f"Target ≥ 2.5 GB/s on one core: `hash_file` does {v:.2f} GB/s per CPU-second, "
            f"**{'met' if v >= 2.5 else 'missed'}**."
        )
    b3v = runner.version([b3sum, "--version"])
    section = f"""
## Hashing (issue 8, table 4)

blake3 of a 1 GiB file (`bench/data/big.bin`, random bytes, in the page cache: this is
hashing, not the disk), in GB/s (10⁹ bytes/s); median, and in brackets Criterion's 95 %
interval for the median (`hash_file`) or min–max of {args.reps} runs (`b3sum`). One core:
a 1-thread rayon pool (`b3sum --num-threads 1`). **CPU time** is the process's user + system
time: on a machine shared with other builds, wall time mostly measures the others, while
CPU time of one thread is what one core does.

{chr(10).join(rows)}

{verdict}

Where `hash_file`'s time goes (benches/hash.rs, `cpu/strategy:*`: the same file fed to blake3
in other ways, on one thread):

{chr(10).join(strat)}

- Machine: {runner.machine()}
- Load average (1, 5, 15 min): {load_before} before, {load_after} after.
- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; took {elapsed / 60:.1f} min.
- Versions: {b3v} ({b3sum}); blake3 crate {blake3_version()}; {runner.version(['rustc', '--version'])}.
- Reproduce: `make bench-hash` (= `python3 bench/hash.py`; Criterion alone: `cargo bench --bench hash`).
"""
    print(section)
    if not args.no_write:
        runner.write_section(section, BEGIN, END)
        print(f"wrote {runner.BENCHMARKS}")


def blake3_version():
    try:
        lock = (ROOT / "Cargo.lock").read_text()
    except OSError:
        return "?"
    m = re.search(r'name = "blake3"\nversion = "([^"]+)"', lock)
    return m.group(1) if m else "?"


if __name__ == "__main__":
    main()
