#!/usr/bin/env python3
"""First runs of bench/scale.py's grid, two hcpipe builds in pairs (issue 15).

For 1,000 members (2 pairs) and 10,000 (1 pair), runs BASE then NEW, one
after the other, each from an empty cache with `--jobs 2`, and prints one
JSON line per run: wall seconds, CPU of the run with its stages (wait4's
rusage), the runner's own CPU (user + system of the hcpipe process's
threads, last seen in /proc/PID/stat before it exited) and the 1-minute load.
Pairs, not separate tables, because the machine is shared: load changes
between runs minutes apart.

Usage: python3 bench/scale_pairs.py BASE/hcpipe NEW/hcpipe
Standard library only.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def one(binary, n):
    d = tempfile.mkdtemp(prefix=f"scale-pair-{n}-")
    try:
        Path(d, "s.yaml").write_text(scale.pipeline_text(n))
        t0 = time.perf_counter()
        p = subprocess.Popen([binary, "run", "s.yaml", "--jobs", "2", "--cache", f"{d}/c"], cwd=d,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        own = 0.0
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            own = scale.own_cpu(p.pid) or own
            time.sleep(0.05)
        return {
            "bin": binary, "n": n, "exit": os.waitstatus_to_exitcode(status),
            "wall": round(time.perf_counter() - t0, 2),
            "total_cpu": round(ru.ru_utime + ru.ru_stime, 2), "own_cpu": own,
            "load": open("/proc/loadavg").read().split()[0],
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    base, new = sys.argv[1:]
    for n, pairs in [(1000, 2), (10000, 1)]:
        for _ in range(pairs):
            for b in (base, new):
                print(json.dumps(one(b, n)), flush=True)


if __name__ == "__main__":
    main()
