#!/usr/bin/env python3
"""Runner overhead: hcpipe vs DVC vs Snakemake on the same 11-stage toy pipeline.

Issue 2's speed targets and issue 8's table 1. For each tool, side by side in
one run (the tools take turns within every repetition, so the load of a shared
machine falls on all of them alike), each figure the median of the samples with
min-max:

  first run       a fresh project: nothing cached yet
  no-op re-run    nothing changed
  status/dry-run  `hcpipe status`, `dvc status`, `snakemake -n`
  touch 1 GiB     the 1 GiB dep's mtime changed, not its bytes
  edit 1 byte     one byte of the chain's small input changed

plus `python3 -c pass` (and `true`) as reference floors. The pipeline is
pipelines/toy.yaml; the same pipeline is written here as a dvc.yaml and a
Snakefile. Each tool gets a fresh git repository per repetition under
bench/data/work/ (git-ignored), with the 1 GiB file hard-linked in.

The result is written into BENCHMARKS.md between `<!-- runner:begin -->` and
`<!-- runner:end -->` (a rerun replaces it), and the raw samples into
bench/data/runner-results.json.

Usage: make bench-runner   (or: python3 bench/runner.py [--reps N] [--inner K])
Standard library only; DVC and Snakemake are installed, pinned, into
bench/.venv on first use.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".venv"
DATA = ROOT / "bench" / "data"
BENCHMARKS = ROOT / "BENCHMARKS.md"
TOY = ROOT / "pipelines" / "toy.yaml"
HCPIPE = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "hcpipe"

# The versions measured; bump them here, and the venv is rebuilt.
PINS = {"dvc": "3.67.1", "snakemake": "9.27.1"}

BIG_SIZE = 1 << 30
BEGIN, END = "<!-- runner:begin -->", "<!-- runner:end -->"

SCENARIOS = [
    ("first", "first run (nothing cached)"),
    ("noop", "no-op re-run"),
    ("status", "status / dry-run"),
    ("touch", "re-run after touching the 1 GiB dep (mtime only)"),
    ("edit", "re-run after changing 1 byte of the small input"),
]
TOOLS = ["hcpipe", "dvc", "snakemake"]
TOOL_TITLES = {"hcpipe": "hcpipe", "dvc": "DVC", "snakemake": "Snakemake"}

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def die(msg):
    sys.exit(f"bench/runner.py: {msg}")


def sh(cmd, cwd=None, env=None, check=True):
    """Run a command, return CompletedProcess; on failure die with its output."""
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=full_env, capture_output=True, text=True
    )
    if check and p.returncode != 0:
        tail = (p.stdout + p.stderr).strip().splitlines()[-15:]
        die(
            f"`{' '.join(map(str, cmd))}` (in {cwd}) exited {p.returncode}:\n  "
            + "\n  ".join(tail)
        )
    return p


def timed(cmd, cwd, env=None, want_output=False):
    """Wall seconds of one command (and its output); dies if it fails (a failed run is no timing)."""
    full_env = dict(os.environ, **(env or {}))
    t0 = time.perf_counter()
    p = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=full_env, capture_output=True, text=True
    )
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (p.stdout + p.stderr).strip().splitlines()[-15:]
        die(
            f"`{' '.join(map(str, cmd))}` (in {cwd}) exited {p.returncode}:\n  "
            + "\n  ".join(tail)
        )
    return (dt, p.stdout + p.stderr) if want_output else dt


# How each tool says that it ran a stage (the rest of its lines are skips or chatter).
RAN_LINE = {
    "hcpipe": re.compile(r"^ran\s+(\S+)", re.M),
    "dvc": re.compile(r"^Running stage '([^']+)'", re.M),
    "snakemake": re.compile(r"^(?:local)?rule (\w+):", re.M),
}


def stages_ran(tool, output):
    return sorted(set(m for m in RAN_LINE[tool].findall(output) if m != "all"))


# ---------------------------------------------------------------- setup


def ensure_venv():
    """bench/.venv with the pinned DVC and Snakemake; (re)built when a pin differs."""
    py = VENV / "bin" / "python"
    want = [f"{k}=={v}" for k, v in PINS.items()]
    if py.exists():
        p = sh([py, "-m", "pip", "freeze", "--disable-pip-version-check"], check=False)
        have = {l.strip().lower() for l in p.stdout.splitlines()}
        if all(w.lower() in have for w in want):
            return
    base = getattr(sys, "_base_executable", sys.executable)
    print(f"installing {', '.join(want)} into {VENV} (once; a few minutes)", flush=True)
    if not py.exists():
        sh([base, "-m", "venv", VENV])
    sh([py, "-m", "pip", "install", "--disable-pip-version-check", "-q", *want])


def ensure_data():
    """bench/data/big.bin (1 GiB, random) and small.txt (100 lines)."""
    DATA.mkdir(parents=True, exist_ok=True)
    big = DATA / "big.bin"
    if not big.exists() or big.stat().st_size != BIG_SIZE:
        print(f"writing {big} (1 GiB)", flush=True)
        tmp = big.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for _ in range(BIG_SIZE // (8 << 20)):
                f.write(os.urandom(8 << 20))
        tmp.replace(big)
    small = DATA / "small.txt"
    small.write_text("".join(f"line {i}\n" for i in range(1, 101)))
    # Read the big file once so every tool starts from a warm page cache.
    with open(big, "rb") as f:
        while f.read(16 << 20):
            pass
    return big, small


def link_big(big, dest):
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(big, dest)
    except OSError:
        os.symlink(big, dest)


def dvc_yaml():
    """pipelines/toy.yaml as a dvc.yaml: same stages, same commands, flat outputs."""
    lines = ["stages:"]

    def stage(name, cmd, deps, outs):
        lines.append(f"  {name}:")
        lines.append(f"    cmd: {json.dumps(cmd)}")
        lines.append(f"    deps: [{', '.join(deps)}]")
        lines.append(f"    outs: [{', '.join(outs)}]")

    stage("chain1", "cat data/small.txt > chain1.txt", ["data/small.txt"], ["chain1.txt"])
    for i in range(2, 5):
        stage(
            f"chain{i}",
            f"cat chain{i-1}.txt > chain{i}.txt && echo {i} >> chain{i}.txt",
            [f"chain{i-1}.txt"],
            [f"chain{i}.txt"],
        )
    for k in range(1, 6):
        stage(
            f"fan{k}",
            f"wc -l < chain4.txt > fan{k}.txt && echo {k} >> fan{k}.txt",
            ["chain4.txt"],
            [f"fan{k}.txt"],
        )
    fans = [f"fan{k}.txt" for k in range(1, 6)]
    stage("join", f"cat {' '.join(fans)} > join.txt", fans, ["join.txt"])
    stage("big", "wc -c < data/big.bin > size.txt", ["data/big.bin"], ["size.txt"])
    return "\n".join(lines) + "\n"


def snakefile():
    """pipelines/toy.yaml as a Snakefile: same rules, same commands."""
    r = ['rule all:\n    input: "join.txt", "size.txt"\n']

    def rule(name, inputs, output, cmd):
        ins = ", ".join(f'"{i}"' for i in inputs)
        r.append(
            f'rule {name}:\n    input: {ins}\n    output: "{output}"\n'
            f"    shell: {json.dumps(cmd)}\n"
        )

    rule("chain1", ["data/small.txt"], "chain1.txt", "cat data/small.txt > chain1.txt")
    for i in range(2, 5):
        rule(
            f"chain{i}",
            [f"chain{i-1}.txt"],
            f"chain{i}.txt",
            f"cat chain{i-1}.txt > chain{i}.txt && echo {i} >> chain{i}.txt",
        )
    for k in range(1, 6):
        rule(
            f"fan{k}",
            ["chain4.txt"],
            f"fan{k}.txt",
            f"wc -l < chain4.txt > fan{k}.txt && echo {k} >> fan{k}.txt",
        )
    fans = [f"fan{k}.txt" for k in range(1, 6)]
    rule("join", fans, "join.txt", f"cat {' '.join(fans)} > join.txt")
    rule("big", ["data/big.bin"], "size.txt", "wc -c < data/big.bin > size.txt")
    return "\n".join(r)


class Project:
    """One tool's fresh project: a git repo with the pipeline and its data."""

    def __init__(self, tool, root, big, small):
        self.tool = tool
        self.dir = root
        root.mkdir(parents=True)
        data = root / ("bench/data" if tool == "hcpipe" else "data")
        data.mkdir(parents=True)
        shutil.copy(small, data / "small.txt")
        link_big(big, data / "big.bin")
        self.small = data / "small.txt"
        self.big = data / "big.bin"
        sh(["git", "init", "-q", "."], cwd=root)
        nproc = str(os.cpu_count() or 1)
        bindir = VENV / "bin"
        if tool == "hcpipe":
            (root / "pipelines").mkdir()
            shutil.copy(TOY, root / "pipelines" / "toy.yaml")
            (root / ".gitignore").write_text("/cache/\n/bench/data/big.bin\n")
            base = [HCPIPE, "--cache", "cache"]
            self.run_cmd = base + ["run", "pipelines/toy.yaml"]
            self.status_cmd = base + ["status", "pipelines/toy.yaml"]
        elif tool == "dvc":
            (root / "dvc.yaml").write_text(dvc_yaml())
            (root / ".gitignore").write_text("/data/big.bin\n")
            sh([bindir / "dvc", "init", "-q"], cwd=root, env=DVC_ENV)
            sh([bindir / "dvc", "config", "core.analytics", "false"], cwd=root, env=DVC_ENV)
            self.run_cmd = [bindir / "dvc", "repro"]
            self.status_cmd = [bindir / "dvc", "status"]
        else:
            (root / "Snakefile").write_text(snakefile())
            (root / ".gitignore").write_text("/data/big.bin\n/.snakemake/\n")
            self.run_cmd = [bindir / "snakemake", "--cores", nproc]
            self.status_cmd = [bindir / "snakemake", "-n", "--cores", nproc]
        sh(["git", "add", "-A"], cwd=root)
        sh(["git", "commit", "-q", "-m", "toy pipeline"], cwd=root, env=GIT_ENV)

    def env(self):
        return DVC_ENV if self.tool == "dvc" else None

    def run(self):
        """Wall seconds of one run, and the names of the stages it ran."""
        dt, out = timed(self.run_cmd, self.dir, self.env(), want_output=True)
        return dt, stages_ran(self.tool, out)

    def status(self):
        return timed(self.status_cmd, self.dir, self.env())

    def join_output(self):
        """The join stage's output, to check that every tool did the same work."""
        if self.tool != "hcpipe":
            return (self.dir / "join.txt").read_text()
        p = sh([HCPIPE, "--cache", "cache", "show", "pipelines/toy.yaml", "join", "--json"], cwd=self.dir)
        return (Path(json.loads(p.stdout)["path"]) / "join.txt").read_text()


DVC_ENV = {"DVC_NO_ANALYTICS": "1"}


def flip_byte(path):
    """Change one byte of the small input: its first, an `l`, becomes an `x`."""
    b = bytearray(path.read_bytes())
    b[0] = ord("x") if b[0] != ord("x") else ord("y")
    path.write_bytes(bytes(b))


# ---------------------------------------------------------------- report


def fmt(s):
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def cell(samples):
    if not samples:
        return "—"
    return f"{fmt(statistics.median(samples))} ({fmt(min(samples))}–{fmt(max(samples))})"


def version(cmd):
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=dict(os.environ, **DVC_ENV))
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def machine():
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    except (OSError, ValueError):
        pass
    return f"{os.cpu_count()} CPUs (nproc), {model}, {ram} RAM, {platform.system()} {platform.release()}"


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def write_section(section, begin=BEGIN, end=END, path=None, after=None):
    """Put `section` between the markers in `path` (BENCHMARKS.md), replacing what was
    there; a new section goes right after the line `after` when given and present, else
    at the end. Every bench script writes its section through this."""
    path = path or BENCHMARKS
    text = path.read_text() if path.exists() else (
        "# Benchmarks\n\nMeasured by the scripts in bench/; each section says how to reproduce it.\n"
    )
    block = f"{begin}\n{section.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    elif after and after in text:
        i = text.index(after) + len(after)
        text = text[:i] + "\n" + block + text[i:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="fresh projects per tool (>= 5 for the table)")
    ap.add_argument("--inner", type=int, default=3, help="samples of no-op and status per repetition")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset (for debugging)")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    for t in tools:
        if t not in TOOLS:
            die(f"--tools: unknown tool `{t}`; choose from {', '.join(TOOLS)}")
    if not HCPIPE.exists():
        die(f"{HCPIPE} is missing: run `make build` (or `cargo build --release`) first")
    if any(t != "hcpipe" for t in tools):
        ensure_venv()
    big, small = ensure_data()
    floor_py = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    floor_true = shutil.which("true") or "/bin/true"

    load_before = loadavg()
    started = time.time()
    samples = {t: {s: [] for s, _ in SCENARIOS} for t in tools}
    floors = {"python3 -c pass": [], "true": []}
    work = Path(tempfile.mkdtemp(prefix="work-", dir=DATA))
    joins = {}
    ran = {t: {} for t in tools}  # tool -> scenario -> {stage counts seen}
    ran_names = {t: {} for t in tools}  # tool -> scenario -> stages (first repetition)
    try:
        for rep in range(args.reps):
            for tool in tools:
                p = Project(tool, work / f"{tool}-{rep}", big, small)
                s = samples[tool]

                def run(scenario):
                    dt, names = p.run()
                    s[scenario].append(dt)
                    ran[tool].setdefault(scenario, set()).add(len(names))
                    if rep == 0:
                        ran_names[tool][scenario] = names

                run("first")
                if rep == 0:
                    joins[tool] = p.join_output()
                for _ in range(args.inner):
                    run("noop")
                for _ in range(args.inner):
                    s["status"].append(p.status())
                os.utime(p.big)  # mtime = now: the bytes stay the same
                run("touch")
                flip_byte(p.small)
                run("edit")
                shutil.rmtree(p.dir, ignore_errors=True)
            for _ in range(args.inner):
                floors["python3 -c pass"].append(timed([floor_py, "-c", "pass"], ROOT))
                floors["true"].append(timed([floor_true], ROOT))
            done = {t: statistics.median(samples[t]["noop"]) for t in tools}
            print(
                f"rep {rep + 1}/{args.reps}: no-op medians so far "
                + ", ".join(f"{t} {fmt(v)}" for t, v in done.items()),
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.time() - started
    load_after = loadavg()

    if len(set(joins.values())) > 1:
        die(f"the tools' join outputs differ, so they did not do the same work: {joins}")

    header = "| scenario | " + " | ".join(TOOL_TITLES[t] for t in tools) + " |"
    rows = [header, "|---|" + "---:|" * len(tools)]
    for key, title in SCENARIOS:
        rows.append(f"| {title} | " + " | ".join(cell(samples[t][key]) for t in tools) + " |")
    rows.append("| *stages run: first / no-op / touch / edit* | " + " | ".join(
        " / ".join("/".join(map(str, sorted(ran[t].get(k, ())))) or "?" for k in ("first", "noop", "touch", "edit"))
        for t in tools) + " |")
    what = []
    for t in tools:
        names = ran_names[t]
        what.append(
            f"{TOOL_TITLES[t]} re-ran [{', '.join(names.get('touch', [])) or 'nothing'}] after the touch "
            f"and [{', '.join(names.get('edit', [])) or 'nothing'}] after the edit"
        )
    py_floor = statistics.median(floors["python3 -c pass"])
    verdict = ""
    if "hcpipe" in tools:
        noop = statistics.median(samples["hcpipe"]["noop"])
        verdict = (
            f"Issue 2's target, hcpipe's no-op re-run faster than `python3 -c pass`: "
            f"{fmt(noop)} vs {fmt(py_floor)}, **{'met' if noop < py_floor else 'missed'}**."
        )
    versions = [f"hcpipe {version([HCPIPE, '--version']).split()[-1]}"]
    if "dvc" in tools:
        versions.append(f"DVC {version([VENV / 'bin' / 'dvc', '--version'])}")
    if "snakemake" in tools:
        versions.append(f"Snakemake {version([VENV / 'bin' / 'snakemake', '--version'])}")
    versions.append(version(["git", "--version"]))
    versions.append(f"Python {platform.python_version()} ({floor_py})")
    n_once = args.reps
    n_inner = args.reps * args.inner
    section = f"""
## Runner overhead (issue 2; issue 8, table 1)

The 11-stage toy pipeline `pipelines/toy.yaml` (a chain of 4, a fan-out of 5, a join, and
one stage with a 1 GiB dep; the commands are `cat`, `echo`, `wc`), written the same way for
DVC (`dvc.yaml`) and Snakemake (`Snakefile`) by `bench/runner.py`. Wall time of the whole
command; median (min–max) of {n_once} fresh projects for the first run, touch and edit rows,
and of {n_inner} samples for no-op and status. Every tool ran in its own fresh git repository,
the tools taking turns within each repetition.

{chr(10).join(rows)}

Floors (median of {len(floors['true'])}): `python3 -c pass` {cell(floors['python3 -c pass'])},
`true` {cell(floors['true'])}.
{verdict}

Stages run are counted from each tool's own output. {'; '.join(what)}. After a touch, hcpipe
re-hashes the 1 GiB file once (its stat cache missed) and DVC re-hashes it (md5): same bytes,
nothing to run; Snakemake goes by mtime. After the edit, DVC skips stages whose inputs'
bytes did not change (the fan-out's `wc -l` gives the same count, so `join` is skipped);
hcpipe's keys chain upstream keys, not output bytes, so it re-runs `join` as Snakemake does.

- Machine: {machine()}
- Load average (1, 5, 15 min): {load_before} before, {load_after} after — other people were
  compiling on this machine, so absolute figures are noisy; compare columns, not runs.
- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; the whole script took {elapsed / 60:.1f} min.
- Versions: {'; '.join(versions)}.
- Reproduce: `make build && make bench-runner` (= `python3 bench/runner.py --reps {args.reps} --inner {args.inner}`).
"""
    print(section)
    (DATA / "runner-results.json").write_text(
        json.dumps({"samples": samples, "floors": floors, "reps": args.reps, "inner": args.inner, "ran_first_rep": ran_names}, indent=1)
    )
    if not args.no_write:
        write_section(section)
        print(f"wrote {BENCHMARKS}")


if __name__ == "__main__":
    main()
