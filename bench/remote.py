#!/usr/bin/env python3
"""The remote cache (issue 17) measured against a local S3 server (moto).

1. `pipelines/demo.yaml` cold into an empty cache (the baseline);
2. `push` of that cache to the server, then `pull` into an empty cache,
   then `run` (every stage `cached`, 0 ran), and `run` with the remote from
   an empty cache (every stage `pulled`); the soft-vote table `show` prints
   from the pulled cache is kept for BENCHMARKS.md;
3. a 1 GiB artifact (one `cmd` stage writing random bytes): push and pull.

Wall times are medians of --reps; throughput is bytes moved / wall time of
the whole command (runner start, planning, hashing on push, verification
on pull included). Writes the section between `<!-- remote:begin -->` and
`<!-- remote:end -->` in BENCHMARKS.md.

Usage: make build test-services && python3 bench/remote.py [--reps 3]
Standard library only; needs .venv-moto (make test-services).
"""

import argparse
import datetime
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HCPIPE = ROOT / "target" / "release" / "hcpipe"
DEMO = ROOT / "pipelines" / "demo.yaml"
MOTO = ROOT / ".venv-moto" / "bin" / "moto_server"
WORK = ROOT / "bench" / "data" / "remote"
BEGIN, END = "<!-- remote:begin -->", "<!-- remote:end -->"
GIB = 1 << 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    port = free_port()
    proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("PUT", "/bench")
            if c.getresponse().status < 300:
                return proc, port
        except OSError:
            pass
        if time.time() > deadline:
            proc.kill()
            sys.exit("moto_server did not start")
        time.sleep(0.2)


def env_for(port, prefix):
    env = dict(os.environ)
    env.update({
        "HCPIPE_REMOTE": f"s3://bench/{prefix}",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
    })
    env.pop("HCPIPE_CACHE", None)
    return env


def hcpipe(args, cache, env, cwd=ROOT):
    """Run hcpipe; (wall s, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.run([str(HCPIPE), *args, "--cache", str(cache)], env=env, cwd=cwd,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"hcpipe {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return wall, p.stdout


def lines(out):
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def transfer(out):
    """The `{"event": "push"|"pull", ...}` line of a --json push/pull."""
    return next(l for l in lines(out) if l.get("event") in ("push", "pull"))


def statuses(out):
    return [l["status"] for l in lines(out) if "stage" in l and "event" not in l]


def fmt(s):
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def med(xs):
    return statistics.median(xs)


def rate(nbytes, s):
    return f"{nbytes / (1 << 20) / s:.0f} MiB/s"


def fresh(name):
    d = WORK / name
    shutil.rmtree(d, ignore_errors=True)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    if not MOTO.exists():
        sys.exit("no .venv-moto: run `make test-services` first")
    WORK.mkdir(parents=True, exist_ok=True)
    proc, port = start_moto()
    rows, table = [], ""
    try:
        # 1. cold runs (the baseline) and 2. push / pull / run of the demo.
        cold, push, pull, run_after, run_pulling = [], [], [], [], []
        demo_bytes = demo_objects = 0
        for r in range(a.reps):
            env = env_for(port, f"demo{r}")
            src = fresh(f"demo-src{r}")
            w, _ = hcpipe(["run", str(DEMO)], src, env={**env, "HCPIPE_REMOTE": ""})
            cold.append(w)
            w, out = hcpipe(["push", str(DEMO), "--json"], src, env)
            t = transfer(out)
            demo_bytes, demo_objects = t["bytes"], t["objects"]
            push.append(w)
            dst = fresh(f"demo-dst{r}")
            w, out = hcpipe(["pull", str(DEMO), "--json"], dst, env)
            st = statuses(out)
            assert st and all(s == "pulled" for s in st), out
            pull.append(w)
            w, out = hcpipe(["run", str(DEMO), "--json"], dst, {**env, "HCPIPE_REMOTE": ""})
            st = statuses(out)
            assert st and all(s == "cached" for s in st), out
            run_after.append(w)
            if r == 0:
                _, shown = hcpipe(["show", str(DEMO)], dst, env)
                keep = False
                table = []
                for l in shown.splitlines():
                    keep = keep or l.startswith("stage ") and " set " in l
                    if keep and not l.startswith("report"):
                        table.append(l)
                table = "\n".join(table).strip()
            dst2 = fresh(f"demo-run{r}")
            w, out = hcpipe(["run", str(DEMO), "--json"], dst2, env)
            st = statuses(out)
            assert st and all(s == "pulled" for s in st), out
            run_pulling.append(w)
            for d in (src, dst, dst2):
                shutil.rmtree(d, ignore_errors=True)
        n_stages = len(st)
        rows += [
            ("`run` demo.yaml, cold, empty cache (no remote)", fmt(med(cold)), f"{n_stages} ran"),
            (f"`push` demo cache ({demo_objects} objects, {demo_bytes / (1 << 20):.1f} MiB)",
             fmt(med(push)), rate(demo_bytes, med(push))),
            ("`pull` demo.yaml into an empty cache", fmt(med(pull)), rate(demo_bytes, med(pull))),
            ("`run` after that pull", fmt(med(run_after)), f"{n_stages} cached, 0 ran"),
            ("`pull` + `run`", fmt(med(pull) + med(run_after)),
             f"{med(cold) / (med(pull) + med(run_after)):.1f}× faster than cold"),
            ("`run --remote` from an empty cache", fmt(med(run_pulling)),
             f"{n_stages} pulled, 0 ran; {med(cold) / med(run_pulling):.1f}× faster than cold"),
        ]
        # 3. a 1 GiB artifact.
        proj = fresh("big")
        proj.mkdir(parents=True)
        (proj / "big.yaml").write_text(
            "name: big\nstages:\n  big:\n"
            f"    cmd: \"head -c {GIB} /dev/urandom > {{out}}/big.bin\"\n")
        bpush, bpull, fpush, fpull = [], [], [], []
        for r in range(a.reps):
            env = env_for(port, f"big{r}")
            src = proj / f"cache-src{r}"
            hcpipe(["run", "big.yaml"], src, {**env, "HCPIPE_REMOTE": ""}, cwd=proj)
            w, out = hcpipe(["push", "big.yaml", "--json"], src, env, cwd=proj)
            assert transfer(out)["bytes"] == GIB, out
            bpush.append(w)
            shutil.rmtree(src, ignore_errors=True)
            dst = proj / f"cache-dst{r}"
            w, out = hcpipe(["pull", "big.yaml", "--json"], dst, env, cwd=proj)
            assert transfer(out)["bytes"] == GIB, out
            bpull.append(w)
            shutil.rmtree(dst, ignore_errors=True)
            # The same through a folder remote (file://): hcpipe without an S3 server.
            folder = proj / f"remote{r}"
            fenv = {**env, "HCPIPE_REMOTE": f"file://{folder}"}
            hcpipe(["pull", "big.yaml"], src, env, cwd=proj)
            w, _ = hcpipe(["push", "big.yaml"], src, fenv, cwd=proj)
            fpush.append(w)
            w, _ = hcpipe(["pull", "big.yaml"], dst, fenv, cwd=proj)
            fpull.append(w)
            for d in (src, dst, folder):
                shutil.rmtree(d, ignore_errors=True)
        rows += [
            ("`push` of a 1 GiB artifact (multipart, 16 MiB parts)", fmt(med(bpush)), rate(GIB, med(bpush))),
            ("`pull` of a 1 GiB artifact (streamed, hashed as it arrives)", fmt(med(bpull)), rate(GIB, med(bpull))),
            ("the same 1 GiB `push` to a folder remote (`file://`, no server)", fmt(med(fpush)), rate(GIB, med(fpush))),
            ("the same 1 GiB `pull` from a folder remote", fmt(med(fpull)), rate(GIB, med(fpull))),
        ]
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(WORK, ignore_errors=True)

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True).stdout.strip()
    body = [
        BEGIN,
        f"Measured {datetime.date.today()} at {rev} by `make bench-remote` (bench/remote.py), "
        f"median of {a.reps}, on this machine ({os.cpu_count()} cores, shared); the server is "
        "moto 5.2.5 (Python, in-memory) on 127.0.0.1, so the rates are hcpipe's and moto's "
        "together, not a network's.",
        "",
        "| what | wall | |",
        "|---|---|---|",
        *[f"| {w} | {t} | {x} |" for w, t, x in rows],
        "",
        "The demo's soft-vote table as `hcpipe show pipelines/demo.yaml` prints it from the pulled "
        "cache (0 stages run):",
        "",
        "```",
        table,
        "```",
        END,
    ]
    section = "\n".join(body)
    print(section)
    if a.no_write:
        return
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text += "\n## The remote cache (issue 17)\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
