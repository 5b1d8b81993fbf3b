#!/usr/bin/env python3
"""Slurm at scale: a 1,000-member matrix submitted to `scripts/slurm-local` (issues 15, 16).

The pipeline is bench/scale.py's: one `prep` stage, an N-member matrix stage `m`
(`echo ${matrix.i} > {out}/x`) and one gather stage over it, run with
`hcpipe -v run --executor slurm` from an empty cache, polling at hcpipe's
default interval. For each hcpipe binary measured (this checkout's, and with
--baseline another one, e.g. main's), one run:

  sbatch calls   every submission (`sbatch --version` not counted), and how
                 many of them were for members of `m`
  submit time    seconds spent inside the sbatch calls for `m`'s members, and
                 from the run's start until the last of them returned
  squeue calls   and polls: this checkout logs its polls at -v; a binary that
                 does not (main) polls with exactly one squeue each (its
                 src/exec/slurm.rs), so its polls are its squeue calls
  scontrol calls `scontrol show job` / `show config`
  RPCs           slurmctld's RPC counts by message type (`sdiag`), after minus
                 before the run (sdiag's own REQUEST_STATS_INFO left out);
                 slurmctld counts every client, so the run's window is checked
                 for other projects' jobs and the table says if there were any
  wall           the whole run, every job included

sbatch, squeue and scontrol are counted by wrappers put first on PATH (a shell
each, ~2 ms a call, included in the submit time).

The result goes into BENCHMARKS.md between `<!-- slurm-scale:begin -->` and
`<!-- slurm-scale:end -->`, the raw figures into bench/data/slurm-scale.json.

Usage: make bench-slurm-scale   (or: python3 bench/slurm_scale.py [--n 1000]
       [--baseline /path/to/main/hcpipe]); needs root for scripts/slurm-local.
Standard library only.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runner  # noqa: E402  (shared helpers: machine, load, section writer)

ROOT = runner.ROOT
HCPIPE = runner.HCPIPE
BEGIN, END = "<!-- slurm-scale:begin -->", "<!-- slurm-scale:end -->"
JOBCOMP = Path("/var/log/slurm-local/jobcomp.log")


def pipeline_text(n):
    values = ", ".join(str(i) for i in range(n))
    return f"""name: slurm-scale
stages:
  prep:
    cmd: "echo prep > {{out}}/p"
  m:
    cmd: "echo ${{matrix.i}} > {{out}}/x"
    needs: [prep]
    matrix: {{i: [{values}]}}
  table:
    cmd: "wc -l < {{in.m:list}} > {{out}}/t"
    needs: [m]
    gather: true
"""


def wrappers(bindir, calls_log):
    """sbatch/squeue/scontrol wrappers that log `tool start end args` and run the real one."""
    bindir.mkdir(parents=True, exist_ok=True)
    for tool in ("sbatch", "squeue", "scontrol"):
        real = shutil.which(tool)
        if not real:
            runner.die(f"{tool} is not on PATH; start Slurm with `scripts/slurm-local start`")
        (bindir / tool).write_text(
            "#!/bin/sh\n"
            "s=$(date +%s.%N)\n"
            f"'{real}' \"$@\"\n"
            "rc=$?\n"
            f"echo \"{tool} $s $(date +%s.%N) $*\" >> '{calls_log}'\n"
            "exit $rc\n"
        )
        (bindir / tool).chmod(0o755)


def sdiag_rpcs():
    """slurmctld's RPC counts by message type."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    part = out.split("Remote Procedure Call statistics by message type", 1)[1]
    part = part.split("Remote Procedure Call statistics by user", 1)[0]
    counts = {}
    for m in re.finditer(r"^\s*(\w+)\s+\(\s*\d+\)\s+count:(\d+)", part, re.M):
        counts[m.group(1)] = int(m.group(2))
    return counts


def sdiag_users():
    """slurmctld's RPC (count, total microseconds) by user name."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    part = out.split("Remote Procedure Call statistics by user", 1)[1].split("Pending RPC", 1)[0]
    return {
        m.group(1): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"^\s*(\S+)\s+\(\s*\d+\)\s+count:(\d+)\s+ave_time:\d+\s+total_time:(\d+)", part, re.M)
    }


def daemon_rpc(name):
    """RPCs slurmd sends for every job (its end, its epilog, its node), whoever submitted it."""
    return name.startswith("MESSAGE_") or name.startswith("REQUEST_COMPLETE_")


def foreign_jobs(since, workdir):
    """Jobs of other projects submitted after `since` (epoch seconds) and ended
    since, from the jobcomp log (a job still running at the end is not seen)."""
    n = 0
    try:
        lines = JOBCOMP.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        # `Key=Value` pairs; a value (WorkDir) may hold spaces.
        f = dict(re.findall(r"(\w+)=(.*?)(?= \w+=|\s*$)", line))
        try:
            t = datetime.datetime.strptime(f.get("SubmitTime", ""), "%Y-%m-%dT%H:%M:%S").timestamp()
        except ValueError:
            continue
        # SubmitTime has whole seconds.
        if t >= int(since) and f.get("WorkDir") != str(workdir):
            n += 1
    return n


def measure(label, exe, n, keep, user, nice):
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label)
    work = Path(tempfile.mkdtemp(prefix=f"hcpipe-slurm-{slug}-"))
    try:
        (work / "p.yaml").write_text(pipeline_text(n))
        calls_log = work / "calls.log"
        wrappers(work / "bin", calls_log)
        env = dict(os.environ, PATH=f"{work / 'bin'}:{os.environ.get('PATH', '')}")
        env.pop("HCPIPE_SLURM_POLL", None)
        cmd = [str(exe), "-v", "run", "p.yaml", "--executor", "slurm", "--json"]
        if nice:
            cmd.append(f"--slurm-opt=--nice={nice}")
        if user:
            # slurmctld counts RPCs by user: running as `user` separates this
            # run's calls from other projects' on a shared controller.
            subprocess.run(["chown", "-R", user, str(work)], check=True)
            cmd = ["runuser", "-u", user, "--", "env", f"PATH={env['PATH']}", f"HOME={work}"] + cmd
        before = sdiag_rpcs()
        users_before = sdiag_users()
        t0 = time.time()
        p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        t1 = time.time()
        # Completions reach slurmctld's counters just after the last result file.
        time.sleep(3)
        after = sdiag_rpcs()
        users_after = sdiag_users()
        if p.returncode != 0:
            runner.die(f"{label}: hcpipe run failed ({p.returncode}):\n{p.stderr[-3000:]}")
        ran = sum(1 for l in p.stdout.splitlines() if '"status":"ran"' in l)
        calls = []
        for line in calls_log.read_text().splitlines():
            tool, start, end, *args = line.split(" ")
            calls.append((tool, float(start), float(end), " ".join(args)))
        sbatch = [c for c in calls if c[0] == "sbatch" and c[3] != "--version"]
        member = [c for c in sbatch if "--job-name=hcpipe-m" in c[3]]
        squeue = [c for c in calls if c[0] == "squeue"]
        scontrol = [c for c in calls if c[0] == "scontrol"]
        m = re.search(r"slurm: .*?(\d+) polls, (\d+) squeue calls", p.stderr)
        polls = int(m.group(1)) if m else len(squeue)
        rpcs = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        rpcs = {k: v for k, v in rpcs.items() if v and k != "REQUEST_STATS_INFO"}
        if user:
            c0, t0_us = users_before.get(user, (0, 0))
            c1, t1_us = users_after.get(user, (0, 0))
            client = {"count": c1 - c0, "controller_s": (t1_us - t0_us) / 1e6, "how": f"sdiag, RPCs by user `{user}`"}
        else:
            client = {"count": sum(v for k, v in rpcs.items() if not daemon_rpc(k)), "controller_s": None,
                      "how": "sdiag, RPCs by type, slurmd's left out"}
        return {
            "user": user,
            "nice": nice,
            "client_rpcs": client,
            "label": label,
            "exe": str(exe),
            "n": n,
            "ran": ran,
            "wall_s": t1 - t0,
            "sbatch_calls": len(sbatch),
            "member_sbatch_calls": len(member),
            "member_submit_s": sum(c[2] - c[1] for c in member),
            "members_submitted_after_s": (max(c[2] for c in member) - t0) if member else None,
            "squeue_calls": len(squeue),
            "polls": polls,
            "polls_logged": bool(m),
            "scontrol_calls": len(scontrol),
            "rpcs": rpcs,
            "rpcs_total": sum(rpcs.values()),
            "foreign_jobs": foreign_jobs(t0, work / "cache" / "slurm"),
        }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def git_rev(exe):
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(exe).resolve().parents[2],
            capture_output=True, text=True,
        ).stdout.strip() or "?"
    except (OSError, IndexError):
        return "?"


def client_rpcs(r):
    c = r.get("client_rpcs")
    if not c:
        c = {"count": sum(v for k, v in r["rpcs"].items() if not daemon_rpc(k)), "how": "sdiag, RPCs by type, slurmd's left out"}
    return f"{c['count']:,} ({c['how']})"


def table(results):
    cols = [r["label"] for r in results]
    rows = [
        ("stages run", lambda r: f"{r['ran']:,}"),
        ("`sbatch` calls (for `m`'s members)", lambda r: f"{r['sbatch_calls']:,} ({r['member_sbatch_calls']:,})"),
        ("time inside `sbatch` for `m`", lambda r: f"{r['member_submit_s']:.2f} s"),
        ("run start → last member submitted", lambda r: f"{r['members_submitted_after_s']:.1f} s"),
        ("polls / `squeue` calls", lambda r: f"{r['polls']:,} / {r['squeue_calls']:,}" + ("" if r["polls_logged"] else " (polls = squeue calls, by its code)")),
        ("`scontrol` calls", lambda r: f"{r['scontrol_calls']:,}"),
        ("RPCs from hcpipe's calls (sbatch, squeue, scontrol)", client_rpcs),
        ("… slurmctld time serving them", lambda r: "–" if not r.get("client_rpcs") or r["client_rpcs"]["controller_s"] is None else f"{r['client_rpcs']['controller_s']:.2f} s"),
        ("all slurmctld RPCs meanwhile (every client)", lambda r: f"{r['rpcs_total']:,}"),
    ]
    types = sorted({k for r in results for k in r["rpcs"]}, key=lambda k: -max(r["rpcs"].get(k, 0) for r in results))
    for k in types:
        rows.append((f"… `{k}`", lambda r, k=k: f"{r['rpcs'].get(k, 0):,}"))
    rows.append(("wall time of the run", lambda r: f"{r['wall_s']:.0f} s"))
    rows.append(("other projects' jobs ended meanwhile", lambda r: "?" if r["foreign_jobs"] is None else str(r["foreign_jobs"])))
    out = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, f in rows:
        out.append(f"| {name} | " + " | ".join(f(r) for r in results) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="members of the matrix stage")
    ap.add_argument("--baseline", help="another hcpipe binary to measure first (e.g. main's)")
    ap.add_argument("--baseline-label", default="main")
    ap.add_argument("--label", default="this branch")
    ap.add_argument("--keep", action="store_true", help="keep the work folders")
    ap.add_argument("--user", default="nobody",
                    help="run hcpipe as this user (sdiag counts RPCs by user); '' runs it as yourself")
    ap.add_argument("--nice", type=int, default=10000,
                    help="--slurm-opt=--nice=N, so other projects' jobs on the node go first (0: none)")
    ap.add_argument(
        "--reuse-baseline", action="store_true",
        help="take the baseline's figures from bench/data/slurm-scale.json instead of measuring it again",
    )
    ap.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    a = ap.parse_args()
    up = subprocess.run(["bash", str(ROOT / "scripts" / "slurm-local"), "start"], capture_output=True, text=True)
    if up.returncode != 0:
        runner.die(f"scripts/slurm-local start failed:\n{up.stdout}{up.stderr}")
    started = time.time()
    load_before = runner.loadavg()
    results = []
    runs = [(a.baseline_label, Path(a.baseline))] if a.baseline and not a.reuse_baseline else []
    if a.reuse_baseline:
        old = json.loads((ROOT / "bench" / "data" / "slurm-scale.json").read_text())
        kept = [r for r in old if r["label"] == a.baseline_label and r["n"] == a.n]
        if not kept:
            runner.die(f"no `{a.baseline_label}` figures for n={a.n} in bench/data/slurm-scale.json")
        results.extend(kept)
    runs.append((a.label, HCPIPE))
    for label, exe in runs:
        print(f"{label}: {a.n} members with {exe} ...", flush=True)
        r = measure(label, exe, a.n, a.keep, a.user or None, a.nice)
        r["rev"] = git_rev(exe) if exe == HCPIPE else "?"
        print(json.dumps(r, indent=1), flush=True)
        results.append(r)
    data = ROOT / "bench" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "slurm-scale.json").write_text(json.dumps(results, indent=1) + "\n")
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%c CPUs, %m MB"], capture_output=True, text=True).stdout.strip()
    version = subprocess.run(["sbatch", "--version"], capture_output=True, text=True).stdout.strip()
    section = f"""## Slurm at scale (issues 15, 16)

A {a.n:,}-member matrix stage (bench/scale.py's pipeline: `prep`, `m` with N members, a gather)
run from an empty cache with `hcpipe -v run --executor slurm` on `scripts/slurm-local`
(one node: {sinfo}; {version}), polling every 2 s (hcpipe's default), default `--jobs` (256
CPUs in flight){f", as user `{a.user}`" if a.user else ""}{f", with `--slurm-opt=--nice={a.nice}`" if a.nice else ""}. Reproduce: `make bench-slurm-scale` (= `python3 bench/slurm_scale.py`; add
`--baseline PATH/hcpipe` to measure another build first). Calls are counted by wrappers of
sbatch/squeue/scontrol on PATH; RPCs are slurmctld's own counts (`sdiag`, after minus before).

{table(results)}

- Machine: {runner.machine()}; load average {load_before} before, {runner.loadavg()} after.
- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; took {(time.time() - started) / 60:.1f} min.
"""
    print(section)
    if not a.no_write:
        runner.write_section(section, BEGIN, END, after="<!-- scale-after:end -->")


if __name__ == "__main__":
    main()
