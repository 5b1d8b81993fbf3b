#!/usr/bin/env python3
"""Scale: planning and running pipelines of 1,000 to 1,000,000 stages (issue 15).

A cmd pipeline of one `prep` stage, an N-member matrix stage `m` over it (a
grid of axes, see `axes_of`; each member writes its own values: `echo
${matrix.a} ${matrix.b} ... > {out}/x`, so no two members share a key) and one
gather stage `table` that reads the members' folders through `{in.m:list}`. For each N, each figure the median of --reps samples
(min-max in brackets), wall seconds and the peak RSS of the hcpipe process:

  status      `hcpipe status` with nothing cached
  dry-run     `hcpipe run --dry-run` with nothing cached
  first run   `hcpipe run` from an empty cache (N <= --max-first-run; it
              starts N shell processes), once per N unless --first-reps
  no-op run   `hcpipe run` again, everything cached

A first run of 1,000,000 stages takes over an hour on 2 cores, so its cache
is made once, apart (`make scale-cache`: --make-cache N --cache-dir DIR keeps
the cache and the first run's figures in DIR), and the bench's no-op run of
that N uses it (--made-cache N=DIR); the first-run cell then shows the
figures DIR recorded, with their commit.

N above the spec's stage cap (src/spec/validate.rs MAX_STAGES) is tried once
and the cap error reported instead of figures. A first run longer than
--first-timeout seconds is killed and reported as "> T s".

The result goes into BENCHMARKS.md between `<!-- scale:begin -->` and
`<!-- scale:end -->` (or, with --label before|after, into that half of the
section, so a before/after comparison keeps both), and the raw samples into
bench/data/scale-<label>.json.

Usage: make bench-scale   (or: python3 bench/scale.py [--sizes 1000,10000] [--reps N])
Standard library only.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runner  # noqa: E402  (shared helpers: machine, load, section writer)

ROOT = runner.ROOT
HCPIPE = runner.HCPIPE
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
SCENARIOS = [
    ("status", "`status`"),
    ("dry", "`run --dry-run`"),
    ("first", "first `run`"),
    ("noop", "no-op `run`"),
    ("snakemake", "`snakemake -n` (same grid)"),
]
# With --baseline: the same no-op run by the baseline binary, sample by
# sample in turn with the one measured (same cache: keys are compatible).
BASE_SCENARIO = ("noop_base", "no-op `run`, baseline")


def axes_of(n):
    """N members as a grid, the way a user writes a big sweep: axes of 10
    values while 10 divides what is left (1,000,000 = 10^6: `a`..`f`), the
    rest one last axis (2,000 = 10 x 10 x 10 x 2). The file stays small."""
    sizes = []
    while n % 10 == 0 and n > 10:
        sizes.append(10)
        n //= 10
    sizes.append(n)
    return {chr(ord("a") + k): size for k, size in enumerate(sizes)}


def pipeline_text(n):
    axes = axes_of(n)
    matrix = ", ".join(f"{k}: [{', '.join(str(i) for i in range(size))}]" for k, size in axes.items())
    values = " ".join(f"${{matrix.{k}}}" for k in axes)
    return f"""name: scale
stages:
  prep:
    cmd: "echo prep > {{out}}/p"
  m:
    cmd: "echo {values} > {{out}}/x"
    needs: [prep]
    matrix: {{{matrix}}}
  table:
    cmd: "wc -l < {{in.m:list}} > {{out}}/n"
    needs: [m]
    gather: true
"""


def snakefile_text(n):
    """The same pipeline as a Snakefile: `prep`, one job per grid point (its
    output path holds the values as wildcards), and `table` over all of them."""
    axes = axes_of(n)
    path = "m/" + "/".join(f"{{{k}}}" for k in axes) + "/x"
    values = " ".join(f"{{wildcards.{k}}}" for k in axes)
    grid = ", ".join(f"{k}=range({size})" for k, size in axes.items())
    constraints = ", ".join(f'{k}=r"\\d+"' for k in axes)
    return f"""wildcard_constraints: {constraints}

rule all:
    input: "table/n"

rule prep:
    output: "prep/p"
    shell: "echo prep > {{output}}"

rule m:
    input: "prep/p"
    output: "{path}"
    shell: "echo {values} > {{output}}"

rule table:
    input: expand("{path}", {grid})
    output: "table/n"
    run:
        with open(output[0], "w") as f:
            f.write(f"{{len(input)}}\\n")
"""


def ensure_snakemake():
    """Snakemake at bench/runner.py's pin, in its venv (installed once if missing)."""
    bindir = runner.VENV / "bin"
    want = f"snakemake=={runner.PINS['snakemake']}"
    exe = bindir / "snakemake"
    if exe.exists():
        out = subprocess.run([bindir / "python", "-m", "pip", "freeze", "--disable-pip-version-check"],
                             capture_output=True, text=True).stdout.lower()
        if want.lower() in out:
            return exe
    print(f"installing {want} into {runner.VENV} (once)", flush=True)
    if not (bindir / "python").exists():
        subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", runner.VENV], check=True)
    subprocess.run([bindir / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", want], check=True)
    return exe


def own_cpu(pid):
    """CPU seconds of process `pid` itself (all its threads, not its children)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def timed_rss(args, cwd, timeout=None):
    """(wall seconds, peak RSS in KiB from wait4, exit code or "timeout", stderr
    tail, CPU seconds of the process itself as last seen in /proc: without
    the processes it started)."""
    t0 = time.perf_counter()
    err_f = tempfile.TemporaryFile()
    p = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err_f)
    deadline = None if timeout is None else t0 + timeout
    cpu, polled = None, 0.0
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if deadline and time.perf_counter() > deadline:
            p.terminate()
            try:
                os.wait4(p.pid, 0)
            except ChildProcessError:
                pass
            return time.perf_counter() - t0, None, "timeout", "", cpu
        if time.perf_counter() - polled > 0.05:
            cpu = own_cpu(p.pid) or cpu
            polled = time.perf_counter()
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err_f.seek(0)
    err = err_f.read().decode(errors="replace")[-600:]
    return wall, ru.ru_maxrss, p.returncode, err, cpu


def sig3(x):
    """Three significant digits, never in e-notation (a 1M first run is ~3,000 s)."""
    return f"{x:,.0f}" if x >= 1000 else f"{x:.3g}"


def fmt_s(xs):
    if not xs:
        return "–"
    med = statistics.median(xs)
    if len(xs) == 1:
        return f"{sig3(med)} s"
    return f"{sig3(med)} s ({sig3(min(xs))}–{sig3(max(xs))})"


def fmt_mb(kib):
    return "–" if not kib else f"{max(kib) / 1024:.0f} MB"


def first_run(work, cache, args, timeout):
    """One first run of work/scale.yaml into `cache`: (result dict or None, error text)."""
    cmd = [str(HCPIPE), "run", "scale.yaml", "--jobs", str(args.jobs), "--cache", str(cache)]
    w, r, rc, err, cpu = timed_rss(cmd, work, timeout=timeout)
    if rc == "timeout":
        return None, "timeout"
    if rc != 0:
        return None, f"exited {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}"
    return {"wall": w, "rss_kib": r, "cpu": cpu}, None


def commit_of(args):
    """The commit measured: --commit, else the checkout's HEAD."""
    return args.commit or runner.version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])


def make_cache(n, args):
    """--make-cache: the first run of N into --cache-dir, kept, with its figures in first.json."""
    root = Path(args.cache_dir)
    if (root / "cache").exists():
        runner.die(f"{root / 'cache'} exists: remove it, or pick another --cache-dir")
    root.mkdir(parents=True, exist_ok=True)
    (root / "scale.yaml").write_text(pipeline_text(n))
    print(f"N={n}: first run into {root / 'cache'} (no timeout)", flush=True)
    done, error = first_run(root, root / "cache", args, None)
    if error:
        runner.die(f"N={n} first run {error}")
    record = {"n": n, "commit": commit_of(args), "jobs": args.jobs, "stages": n + 2,
              "date": datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z'),
              "load_after": runner.loadavg(), **done}
    (root / "first.json").write_text(json.dumps(record, indent=1))
    print(f"N={n} first: {done['wall']:.0f} s, {done['rss_kib'] / 1024:.0f} MB; wrote {root / 'first.json'}")


def made_cache(n, args):
    """The folder --made-cache names for N, checked: it holds this N's pipeline and first.json."""
    for item in args.made_cache:
        size, _, folder = item.partition("=")
        if int(size) == n:
            root = Path(folder)
            if (root / "scale.yaml").read_text() != pipeline_text(n):
                runner.die(f"{root}/scale.yaml is not the {n}-member pipeline: make it again")
            return root, json.loads((root / "first.json").read_text())
    return None, None


def noop_ran_nothing(cmd, work):
    """Whether a no-op sample really ran nothing: its last line says `0 ran`."""
    out = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    text = (out.stdout + out.stderr).strip()
    last = text.splitlines()[-1] if text else ""
    return out.returncode == 0 and ": 0 ran," in last, last


def measure(n, args):
    work = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=args.workdir))
    try:
        (work / "scale.yaml").write_text(pipeline_text(n))
        cache = work / "cache"
        base = [str(HCPIPE)]
        env_args = ["--cache", str(cache)]
        res = {"n": n}
        for key, cmd in [
            ("status", base + ["status", "scale.yaml", "--cache", str(cache)]),
            ("dry", base + ["run", "scale.yaml", "--dry-run"] + env_args),
        ]:
            walls, rss = [], []
            for _ in range(args.reps):
                w, r, rc, err, _ = timed_rss(cmd, work)
                if rc != 0:
                    res["error"] = f"`{' '.join(cmd[1:3])}` exited {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}"
                    print(f"N={n}: {res['error']}", flush=True)
                    return res
                walls.append(w)
                rss.append(r)
            res[key] = {"wall": walls, "rss_kib": rss}
            print(f"N={n} {key}: {fmt_s(walls)}, {fmt_mb(rss)}", flush=True)
        made, made_first = made_cache(n, args)
        if made:
            # The first run was made apart (make_cache); the no-op runs use its cache.
            res["first"] = {"wall": [made_first["wall"]], "rss_kib": [made_first["rss_kib"]],
                            "runner_cpu": [made_first["cpu"]] if made_first.get("cpu") else [],
                            "stages": n + 2, "made": made_first["commit"]}
            cache = made / "cache"
            env_args = ["--cache", str(cache)]
            print(f"N={n} first (made apart at {made_first['commit']}): {cell(res, 'first')}", flush=True)
            return measure_noop(n, args, res, work, base, env_args)
        if n > args.max_first_run:
            return res
        walls, rss, cpus = [], [], []
        reps = args.first_reps if n <= 1000 else args.first_reps_big
        for rep in range(reps):
            if rep:
                shutil.rmtree(cache, ignore_errors=True)
            done, error = first_run(work, cache, args, args.first_timeout)
            if error == "timeout":
                res["first"] = {"timeout": args.first_timeout}
                print(f"N={n} first: > {args.first_timeout} s (killed)", flush=True)
                return res
            if error:
                res["first_error"] = error
                print(f"N={n} first: {res['first_error']}", flush=True)
                return res
            walls.append(done["wall"])
            rss.append(done["rss_kib"])
            if done["cpu"] is not None:
                cpus.append(done["cpu"])
        res["first"] = {"wall": walls, "rss_kib": rss, "runner_cpu": cpus, "stages": n + 2}
        print(f"N={n} first: {cell(res, 'first')}", flush=True)
        return measure_noop(n, args, res, work, base, env_args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_noop(n, args, res, work, base, env_args):
    """The no-op run samples (and the baseline's, in turn) on the cache
    `env_args` names, everything in it cached."""
    def noop(exe):
        return exe + ["run", "scale.yaml", "--jobs", str(args.jobs)] + env_args
    runs = [("noop", base)]
    if args.baseline:
        runs.append(("noop_base", [args.baseline]))
    samples = {key: ([], []) for key, _ in runs}
    for _ in range(args.reps):
        for key, exe in runs:
            w, r, rc, err, _ = timed_rss(noop(exe), work)
            if rc != 0:
                res[f"{key}_error"] = f"exited {rc}"
                return res
            samples[key][0].append(w)
            samples[key][1].append(r)
    for key, (walls, rss) in samples.items():
        res[key] = {"wall": walls, "rss_kib": rss}
        print(f"N={n} {key}: {fmt_s(walls)}, {fmt_mb(rss)}", flush=True)
    ok, last = noop_ran_nothing(noop(base), work)
    if not ok:
        res["noop_error"] = f"not a no-op: {last!r}"
        print(f"N={n} noop: {res['noop_error']}", flush=True)
    return res


def measure_snakemake(n, args):
    """`snakemake -n` on the same grid, in a fresh folder (nothing made yet)."""
    work = Path(tempfile.mkdtemp(prefix=f"scale-smk-{n}-", dir=args.workdir))
    try:
        (work / "Snakefile").write_text(snakefile_text(n))
        cmd = [str(args.snakemake_exe), "-n", "--cores", str(args.jobs)]
        walls, rss = [], []
        for _ in range(args.snakemake_reps):
            w, r, rc, err, _ = timed_rss(cmd, work, timeout=args.snakemake_timeout)
            if rc == "timeout":
                print(f"N={n} snakemake -n: > {args.snakemake_timeout:g} s (killed)", flush=True)
                return {"timeout": args.snakemake_timeout}
            if rc != 0:
                line = err.strip().splitlines()[-1] if err.strip() else ""
                print(f"N={n} snakemake -n: exited {rc}: {line}", flush=True)
                return {"error": f"exited {rc}: {line}"}
            walls.append(w)
            rss.append(r)
            # One sample of a slow case is enough to compare with.
            if w > 60:
                break
        print(f"N={n} snakemake -n: {fmt_s(walls)}, {fmt_mb(rss)}", flush=True)
        return {"wall": walls, "rss_kib": rss}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cell(r, key):
    if key == "first" and "first_error" in r:
        return f"failed: {r['first_error']}"
    if key.startswith("noop") and f"{key}_error" in r:
        return f"failed: {r[f'{key}_error']}"
    v = r.get(key)
    if v is None:
        return "–"
    if "timeout" in v:
        return f"> {v['timeout']:g} s (killed)"
    if "error" in v:
        return f"failed: {v['error']}"
    text = f"{fmt_s(v['wall'])}, {fmt_mb(v['rss_kib'])}"
    if v.get("made"):
        text += f" (made apart, at {v['made']})"
    if v.get("runner_cpu"):
        per = statistics.median(v["runner_cpu"]) / v["stages"] * 1000
        text += f"; runner's own CPU {per:.2g} ms/stage"
    return text


def table(results):
    scenarios = list(SCENARIOS)
    if any("noop_base" in r for r in results):
        scenarios.insert(4, BASE_SCENARIO)
    head = "| N members | " + " | ".join(t for _, t in scenarios) + " |"
    rows = [head, "|---:|" + "---|" * len(scenarios)]
    for r in results:
        if "error" in r and "status" not in r:
            rows.append(f"| {r['n']:,} | " + r["error"] + " |" + " |" * (len(scenarios) - 1))
            continue
        rows.append(f"| {r['n']:,} | " + " | ".join(cell(r, k) for k, _ in scenarios) + " |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000",
                    help="matrix members (+ prep + table); the spec's cap is 2,000,000 stages")
    ap.add_argument("--reps", type=int, default=5, help="samples of status, dry-run and no-op run")
    ap.add_argument("--first-reps", type=int, default=3, help="samples of the first run, N <= 1,000")
    ap.add_argument("--first-reps-big", type=int, default=1, help="samples of the first run, N > 1,000")
    ap.add_argument("--snakemake-sizes", default="10000,100000",
                    help="N measured with `snakemake -n` on the same grid as a Snakefile ('' for none)")
    ap.add_argument("--snakemake-reps", type=int, default=3)
    ap.add_argument("--snakemake-timeout", type=float, default=900)
    ap.add_argument("--max-first-run", type=int, default=10000, help="largest N given a first run")
    ap.add_argument("--first-timeout", type=float, default=600)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--label", default="", help="before|after|grid: one table of the section, beside the others")
    ap.add_argument("--commit", default="", help="the commit measured, for the section's text")
    ap.add_argument("--workdir", default=None, help="where the throwaway projects go (default: $TMPDIR)")
    ap.add_argument("--hcpipe", default=str(runner.HCPIPE), help="the binary measured (a copy of an older build)")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    ap.add_argument("--baseline", default=None,
                    help="another hcpipe binary whose no-op run is measured in turn with this one's")
    ap.add_argument("--baseline-label", default="", help="what the baseline is (a commit), for the text")
    ap.add_argument("--make-cache", type=int, default=None,
                    help="only make N's first run into --cache-dir, kept for --made-cache (no timeout)")
    ap.add_argument("--cache-dir", default=None, help="with --make-cache: where the cache and first.json go")
    ap.add_argument("--made-cache", action="append", default=[], metavar="N=DIR",
                    help="N's no-op runs use the cache --make-cache made in DIR (repeatable)")
    args = ap.parse_args()
    global HCPIPE
    HCPIPE = Path(args.hcpipe)
    if not HCPIPE.exists():
        runner.die(f"{HCPIPE} missing: run `cargo build --release` first")
    if args.make_cache:
        if not args.cache_dir:
            runner.die("--make-cache needs --cache-dir")
        make_cache(args.make_cache, args)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    load_before = runner.loadavg()
    t0 = time.time()
    smk_sizes = [int(s) for s in args.snakemake_sizes.split(",") if s]
    args.snakemake_exe = ensure_snakemake() if smk_sizes else None
    smk_version = runner.version([str(args.snakemake_exe), "--version"]) if smk_sizes else ""
    results = []
    for n in sizes:
        r = measure(n, args)
        if n in smk_sizes:
            r["snakemake"] = measure_snakemake(n, args)
        results.append(r)
    elapsed = time.time() - t0
    commit = commit_of(args)
    runner.DATA.mkdir(parents=True, exist_ok=True)
    raw = runner.DATA / f"scale-{args.label or 'latest'}.json"
    raw.write_text(json.dumps({"commit": commit, "results": results}, indent=1))
    title = f"hcpipe at {commit}" + (f" ({args.label})" if args.label else "")
    baseline_note = (
        f"- \"Baseline\": `{args.baseline}` ({args.baseline_label}), its no-op run sample by sample in turn\n"
        "  with this one's, on the same cache.\n"
        if args.baseline else ""
    )
    part = f"""### {title}

{table(results)}

- Medians of {args.reps} samples (min–max) for status, dry-run and no-op run; the first run
  {args.first_reps} sample(s) for N ≤ 1,000, {args.first_reps_big} above, `--jobs {args.jobs}`, killed after
  {args.first_timeout:g} s. Peak RSS of the hcpipe process (wait4 `ru_maxrss`; for a first run the
  largest child counts too). "Runner's own CPU": user + system time of the hcpipe process's own
  threads (`/proc/PID/stat`, last seen before it exited), not of the stages' processes, per stage.
- `snakemake -n --cores {args.jobs}` ({smk_version}) on the same grid written as a Snakefile
  (`snakefile_text` in bench/scale.py: one rule per stage, the grid as wildcards, `table` over
  `expand(...)`), in a fresh folder; medians of up to {args.snakemake_reps} samples (one when a sample
  exceeds 60 s), killed after {args.snakemake_timeout:g} s.
{baseline_note}- Machine: {runner.machine()}; other processes may have shared its cores.
- Load average (1, 5, 15 min): {load_before} before, {runner.loadavg()} after.
- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; took {elapsed / 60:.1f} min.
"""
    print(part)
    if args.no_write:
        return
    intro = """## Scale (issue 15)

One `prep` cmd stage, an N-member matrix stage over it (a grid of axes of 10 values:
`echo ${matrix.a} ${matrix.b} ... > {out}/x`) and one gather stage reading the members through
`{in.m:list}` (bench/scale.py writes it, and the same grid as a Snakefile). Reproduce:
`make bench-scale` (= `python3 bench/scale.py --label grid`). The spec's cap is 2,000,000 stages.
"""
    if args.label:
        if BEGIN not in runner.BENCHMARKS.read_text():
            runner.write_section(intro, BEGIN, END)
        tag = args.label
        # A new labelled table goes after the last one there is.
        text = runner.BENCHMARKS.read_text()
        ends = [m for m in ("<!-- scale-after:end -->", "<!-- scale-before:end -->") if m in text]
        runner.write_section(part, f"<!-- scale-{tag}:begin -->", f"<!-- scale-{tag}:end -->",
                             after=ends[0] if ends else END)
    else:
        runner.write_section(intro + "\n" + part, BEGIN, END)
    print(f"wrote {runner.BENCHMARKS}")


if __name__ == "__main__":
    main()
