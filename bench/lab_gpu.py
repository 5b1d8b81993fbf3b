#!/usr/bin/env python3
"""The lab on a GPU: hcpipe's oasis pipeline vs a faithful Python port of the lab.

Issue 8's table 3: the lab pipeline on a GPU against bench/lab.py (the seed
notebook's code as a script), on synthetic data of the real size (the OASIS-1
lab_1 split: 58 AD / 242 CN train, 15 AD / 62 CN validation = 377 subjects,
121x145x121 float32 volumes) with the lab's 30 CNN / 30 AE epochs, per stage
and in total. Meant to be run once, on a GPU machine, within a time budget.

  hcpipe   pipelines/oasis.yaml (its resources: gpu 0.25 each, so both CNNs
           and the AE share the GPU) with its `dataset` stage replaced by
           `op: synth` with --counts and its epochs params set, written to
           WORK/lab-gpu.yaml. Each run (per repetition, per --variant: an
           environment; by default: hcpipe as it comes (one torch worker for the
           run, CUDA graphs), then one worker process per stage
           (HCPIPE_TORCH_SERVER=0), then eager steps (HCPIPE_CUDA_GRAPHS=0))
           gets a fresh cache WORK/cache-REP-VARIANT holding the `dataset` stage
           alone first (WORK/dataset.yaml: the same stage, hence the same key;
           untimed); then `hcpipe run WORK/lab-gpu.yaml --json` is timed:
           total = wall of the command, per stage = `run --json`'s wall_s, plus
           each stage's metrics (device, seconds_per_epoch, cuda_graph, ...).
  lab.py   bench/lab.py on the same dataset folder (the first cache's `dataset`
           artifact) with the same epochs, --lab-num-workers DataLoader workers
           (the lab: 8) and --lab-threads torch threads (default: nproc, torch's
           own default, as the lab sets none); per stage from its JSON,
           total = wall of the process.

Order within a repetition: the first variant, lab.py, the other variants (the
reverse every other repetition), so that when time runs short what goes is the
extra variants. --parity then runs the lab's test() on the first variant's
trained weights (lab.py --check-eval).

Everything goes to OUT: results.json (raw, rewritten after every step, so a
timeout or a crash loses nothing gathered), logs/ (stdout and stderr of every
step), hcpipe-run-REP-VARIANT.json (the run record), hcpipe-metrics-REP-VARIANT.json (the metrics
of the learning stages), gpu-*.csv (nvidia-smi samples) and table.md (printed
last). Every external step has a timeout, bounded by what is left of --budget.

Usage:
  python3 bench/lab_gpu.py --bin DIR --work DIR --out DIR [--epochs 30] [--ae-epochs 30]
      [--counts 58,242,15,62] [--reps 1] [--lab-reps N] [--skip-lab] [--lab-num-workers 8]
      [--lab-threads N] [--python python3] [--torch-lib auto|none|DIR] [--budget 450]
      [--variant NAME[:K=V,...]]... [--parity]   (K=ARGS: extra `hcpipe run` arguments, e.g. serial:ARGS=--jobs 2)
  python3 bench/lab_gpu.py --write-benchmarks OUT/results.json [--benchmarks BENCHMARKS.md]
      Puts the table into BENCHMARKS.md between `<!-- lab-gpu:begin -->` and
      `<!-- lab-gpu:end -->` (after `<!-- lab-cpu:end -->` the first time).

--bin holds hcpipe and hcpipe-torch. --torch-lib auto (default) puts the
`torch/lib` folder of --python's torch on LD_LIBRARY_PATH for hcpipe (the worker
built here has an rpath to this machine's venv, which a GPU machine lacks);
`none` leaves the environment alone; a folder is used as it is.
Standard library only (python3 >= 3.11); lab.py needs torch, numpy, pandas,
scikit-learn and safetensors in --python.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab_cpu as lc  # noqa: E402  (fmt, cell, num, machine, loadavg, dig, matched, metric_rows, ROWS)

ROOT = Path(__file__).resolve().parent.parent
OASIS = ROOT / "pipelines" / "oasis.yaml"
LAB = ROOT / "bench" / "lab.py"
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- lab-gpu:begin -->", "<!-- lab-gpu:end -->"
AFTER = "<!-- lab-cpu:end -->"

# Issue 8's figures for the lab's own notebook on one H100 (real OASIS-1 data).
REFERENCE = {"cnn_left": 42.0, "cnn_right": 37.0, "ae_per_epoch": 1.1, "total": 114.0}
REFERENCE_TEXT = "CNN left 42 s, right 37 s, AE 1.1 s/epoch, ≈114 s in all on one H100"

# Stages whose metrics are saved apart (hcpipe-metrics-N.json).
LEARNING = ["cnn_left", "cnn_right", "ae_left", "eval_left", "eval_right", "soft_vote", "codes_left", "clusters"]
TORCH_STAGES = ["cnn_left", "cnn_right", "eval_left", "eval_right", "ae_left", "codes_left"]
ROWS = lc.ROWS + [("report (hcpipe only)", ["report"], None)]

PY_INFO = r"""
import json, os, sys
out = {"python": sys.version.split()[0], "executable": sys.executable}
try:
    import torch
    out["torch"] = torch.__version__
    out["lib"] = os.path.join(os.path.dirname(torch.__file__), "lib")
    out["cuda_available"] = torch.cuda.is_available()
    out["cuda_version"] = torch.version.cuda
    if torch.cuda.is_available():
        out["device_name"] = torch.cuda.get_device_name(0)
        out["device_count"] = torch.cuda.device_count()
        out["cudnn"] = torch.backends.cudnn.version()
except Exception as e:
    out["torch_error"] = repr(e)
for m in ("numpy", "pandas", "sklearn", "safetensors"):
    try:
        out[m] = __import__(m).__version__
    except Exception as e:
        out[m] = "missing: " + repr(e)
print(json.dumps(out))
"""


def log(msg):
    print(f"[lab_gpu {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def tail(path, n=3000):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return ""


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def json_lines(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "stage" in rec:
                out[rec["stage"]] = rec
    return out


class Interrupted(Exception):
    pass


def _on_term(signum, _frame):
    raise Interrupted(f"signal {signum}")


class GpuSampler:
    """nvidia-smi samples while a step runs (nothing when there is no nvidia-smi)."""

    def __init__(self, path):
        self.path, self.proc, self.file = Path(path), None, None

    def __enter__(self):
        exe = shutil.which("nvidia-smi")
        if exe:
            try:
                self.file = open(self.path, "w")
                self.proc = subprocess.Popen(
                    [exe, "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                     "-lms", "250"], stdout=self.file, stderr=subprocess.DEVNULL, start_new_session=True)
            except OSError:
                self.proc = None
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.file:
            self.file.close()
        return False

    def summary(self):
        util, mem = [], []
        try:
            for line in self.path.read_text().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 3:
                    try:
                        util.append(float(parts[1]))
                        mem.append(float(parts[2]))
                    except ValueError:
                        pass
        except OSError:
            return None
        if not util:
            return None
        return {"samples": len(util), "util_mean_pct": statistics.fmean(util), "util_max_pct": max(util),
                "busy_share": sum(1 for u in util if u > 0) / len(util), "mem_max_mib": max(mem),
                "file": self.path.name}


class Bench:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out).resolve()
        self.work = Path(args.work).resolve()
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.lab_dataset = None
        self.r = {
            "kind": "lab-gpu", "argv": sys.argv, "args": vars(args), "started": now_utc(),
            "machine": {}, "steps": [], "errors": [], "hcpipe": [], "lab": [], "parity": {},
        }
        self.save()

    # ------------------------------------------------------------ bookkeeping

    def left(self):
        return self.args.budget - (time.monotonic() - self.t0)

    def save(self):
        self.r["elapsed_s"] = time.monotonic() - self.t0
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(self.r, indent=1, default=str))
        os.replace(tmp, self.out / "results.json")

    def error(self, msg):
        log(f"ERROR: {msg}")
        self.r["errors"].append(msg)
        self.save()

    def step(self, name, cmd, cap, env=None, minimum=5, stamp=False):
        """Run cmd with stdout/stderr to OUT/logs/NAME.{stdout,stderr}; timeout min(cap, budget left).

        Returns the step record (rc None when skipped or timed out) with `stdout_text` added
        (not saved in results.json: the file has it); with `stamp`, also `stamps`: for
        each stdout line, the seconds since the start at which it came."""
        cmd = [str(c) for c in cmd]
        timeout = min(cap, self.left() - 15)
        rec = {"name": name, "cmd": cmd, "timeout_s": round(timeout, 1), "rc": None, "wall_s": None,
               "timed_out": False, "stdout": f"logs/{name}.stdout", "stderr": f"logs/{name}.stderr"}
        self.r["steps"].append(rec)
        if self.left() - 15 < minimum:
            rec["skipped"] = f"budget: {self.left():.0f} s left of --budget {self.args.budget}"
            self.error(f"{name}: skipped, {rec['skipped']}")
            return dict(rec, stdout_text="")
        out_p, err_p = self.logs / f"{name}.stdout", self.logs / f"{name}.stderr"
        shown = " ".join(c if len(c) < 120 else c[:60].replace("\n", " ") + " …" for c in cmd)
        log(f"{name}: {shown}  (timeout {timeout:.0f} s)")
        self.save()
        t = time.perf_counter()
        with open(out_p, "w") as fo, open(err_p, "w") as fe:
            try:
                p = subprocess.Popen(cmd, stdout=subprocess.PIPE if stamp else fo, stderr=fe,
                                     stdin=subprocess.DEVNULL, cwd=ROOT, env=env, start_new_session=True)
            except OSError as e:
                rec["error"] = repr(e)
                self.error(f"{name}: could not start: {e}")
                return dict(rec, stdout_text="")
            stamps, reader = [], None
            if stamp:
                def read():
                    try:
                        for raw in p.stdout:
                            stamps.append((time.perf_counter() - t, raw.decode(errors="replace")))
                            fo.write(stamps[-1][1])
                            fo.flush()
                    except (OSError, ValueError):  # the file closed under a stuck reader
                        pass
                reader = threading.Thread(target=read, daemon=True)
                reader.start()
            try:
                rec["rc"] = p.wait(timeout)
            except subprocess.TimeoutExpired:
                rec["timed_out"] = True
                self._stop(p)
            except BaseException:
                self._stop(p)
                rec["interrupted"] = True
                rec["wall_s"] = time.perf_counter() - t
                self.save()
                raise
            rec["wall_s"] = time.perf_counter() - t
            if reader:
                reader.join(10)
        text = out_p.read_text(errors="replace")
        if rec["timed_out"] or rec["rc"] != 0:
            why = f"timed out after {timeout:.0f} s" if rec["timed_out"] else f"exit {rec['rc']}"
            self.error(f"{name} failed ({why}) after {rec['wall_s']:.1f} s; stderr tail:\n{tail(err_p)}")
            print(f"--- {name}: stdout tail ---\n{text[-1500:]}", flush=True)
        else:
            log(f"{name}: ok in {rec['wall_s']:.2f} s")
        self.save()
        return dict(rec, stdout_text=text, stamps=list(stamps) if stamp else [])

    @staticmethod
    def _stop(p):
        """SIGTERM the step's process group (hcpipe then stops its stages), SIGKILL after 10 s."""
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                return
            try:
                p.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    # ------------------------------------------------------------ set-up

    def machine_info(self, hcpipe, worker):
        m = self.r["machine"]
        try:
            rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                                 timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            rev = ""
        m.update({"git_head": rev or None, "nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
                  "description": lc.machine(), "loadavg_before": lc.loadavg(),
                  "hostname": platform.node(), "date": now_utc(), "script_python": platform.python_version()})
        if shutil.which("nvidia-smi"):
            s = self.step("nvidia-smi-L", ["nvidia-smi", "-L"], 30)
            m["nvidia_smi_L"] = s["stdout_text"].strip()
            s = self.step("nvidia-smi-query", ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                                               "power.limit,clocks.max.sm", "--format=csv,noheader"], 30)
            m["nvidia_smi_query"] = s["stdout_text"].strip()
        else:
            m["nvidia_smi_L"] = None
        s = self.step("python-info", [self.args.python, "-c", PY_INFO], 180)
        m["lab_python"] = last_json(s["stdout_text"]) or {}
        env = dict(os.environ)
        tl = self.args.torch_lib
        if tl == "auto":
            lib = m["lab_python"].get("lib")
            if lib and Path(lib).is_dir():
                tl = lib
            else:
                self.error(f"--torch-lib auto: no torch/lib from {self.args.python}; leaving LD_LIBRARY_PATH alone")
                tl = "none"
        if tl != "none":
            env["LD_LIBRARY_PATH"] = tl + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
            m["ld_library_path"] = env["LD_LIBRARY_PATH"]
        env["HCPIPE_TORCH_WORKER"] = str(worker)
        env.pop("HCPIPE_CACHE", None)
        self.env = env
        s = self.step("hcpipe-version", [hcpipe, "--version"], 30, env=env)
        m["hcpipe_version"] = s["stdout_text"].strip()
        s = self.step("hcpipe-torch-version", [worker, "--version"], 120, env=env)
        m["hcpipe_torch_version"] = s["stdout_text"].strip()
        self.save()

    def pipelines(self):
        """WORK/lab-gpu.yaml (oasis.yaml, synth dataset, epochs) and WORK/dataset.yaml (its dataset stage)."""
        a = self.args
        text = OASIS.read_text()
        for name, value in (("epochs", a.epochs), ("ae_epochs", a.ae_epochs)):
            text, n = re.subn(rf"(?m)^(  {name}: )\d+$", rf"\g<1>{value}", text)
            if n != 1:
                raise SystemExit(f"lab_gpu.py: {OASIS}: expected one `  {name}: N` line under params:, found {n}")
        ad, cn, vad, vcn = a.counts
        synth = ("  dataset:\n"
                 "    op: synth\n"
                 "    desc: synthetic OASIS-1 tree of the lab_1 split's size (bench/lab_gpu.py)\n"
                 f"    params: {{n_train_ad: {ad}, n_train_cn: {cn}, n_val_ad: {vad}, n_val_cn: {vcn}, "
                 'seed: "${params.seed}"}\n')
        text, n = re.subn(r"(?m)^(stages:\n)  dataset:\n(?:    .*\n)+", lambda m: m.group(1) + synth, text)
        if n != 1:
            raise SystemExit(f"lab_gpu.py: {OASIS}: no `  dataset:` block right after `stages:`; update pipelines()")
        text = re.sub(r"(?m)^name: oasis$", "name: oasis-synth-gpu-bench", text, count=1)
        text = text.replace("(real OASIS-1 tarball)", "(synthetic data of the lab_1 split's size)")
        head = text[:text.index("stages:\n")]
        note = "# Written by bench/lab_gpu.py from pipelines/oasis.yaml; do not edit.\n"
        full, only = self.work / "lab-gpu.yaml", self.work / "dataset.yaml"
        full.write_text(note + text)
        only.write_text(note + head + "stages:\n" + synth)
        self.r["pipeline"] = {"file": str(full), "text": note + text, "dataset_only": str(only)}
        self.save()
        return full, only

    # ------------------------------------------------------------ the sides

    def dataset(self, tag, hcpipe, cache, dataset_only):
        """The `dataset` stage alone into a fresh cache (untimed); its record or None.

        After the first, a cache starts as a hard-linked copy of WORK/cache-seed
        (`cp -al` of the first cache taken while it held the dataset alone:
        objects are read-only and hcpipe replaces every file it rewrites by
        renaming, so a copy cannot write through to the others), and the stage
        is then found cached: the synth's time goes to the measurements instead."""
        seed = self.work / "cache-seed"
        if seed.exists() and not Path(cache).exists():
            subprocess.run(["cp", "-al", str(seed), str(cache)], check=False)
        s = self.step(f"dataset-{tag}", [hcpipe, "--cache", cache, "run", dataset_only, "--json"],
                      self.args.dataset_timeout, env=self.env)
        st = json_lines(s["stdout_text"]).get("dataset")
        if s["rc"] != 0 or not st:
            self.error(f"dataset-{tag}: no dataset")
            return None
        self.r.setdefault("datasets", {})[tag] = {"cache": str(cache), "wall_s": st.get("wall_s")}
        if not seed.exists():
            subprocess.run(["cp", "-al", str(cache), str(seed)], check=False)
        if not self.lab_dataset:  # the first one is lab.py's (the same key: the same files)
            s2 = self.step("show-dataset", [hcpipe, "--cache", cache, "show", dataset_only, "dataset", "--json"],
                           60, env=self.env)
            self.lab_dataset = (last_json(s2["stdout_text"]) or {}).get("path")
            self.r["dataset"] = {"path": self.lab_dataset, "cache": str(cache), "wall_s": st.get("wall_s"),
                                 "metrics": st.get("metrics")}
        self.save()
        return st

    def hcpipe_rep(self, i, variant, hcpipe, cache, pipeline, dataset_only):
        name, extra_env = variant
        tag = f"{i}-{name}"
        if not self.dataset(tag, hcpipe, cache, dataset_only):
            return
        # ARGS (a variant's pseudo-variable) holds extra `hcpipe run` arguments.
        extra_env = dict(extra_env)
        args = shlex.split(extra_env.pop("ARGS", ""))
        env = dict(self.env, **extra_env)
        with GpuSampler(self.out / f"gpu-hcpipe-{tag}.csv") as g:
            s = self.step(f"hcpipe-run-{tag}", [hcpipe, "--cache", cache, "run", pipeline, "--json", *args],
                          self.args.hcpipe_timeout, env=env, stamp=True)
        stages = json_lines(s["stdout_text"])
        # When each stage's line came (seconds since the command started): its end, and so
        # (less its wall_s) its start, as seen from here.
        for at, line in s.get("stamps", []):
            st = json_lines(line)
            for n in st:
                if n in stages:
                    stages[n]["bench_end_s"] = round(at, 3)
                    stages[n]["bench_start_s"] = round(at - (stages[n].get("wall_s") or 0), 3)
        rep = {"rep": i, "variant": name, "env": extra_env, "wall": s["wall_s"], "ok": s["rc"] == 0,
               "rc": s["rc"], "timed_out": s["timed_out"], "stages": stages, "gpu": g.summary(),
               "cache": str(cache)}
        not_ran = [n for n, st in stages.items() if n != "dataset" and st.get("status") != "ran"]
        if not_ran:
            self.error(f"hcpipe {tag}: stages that did not run cold: {not_ran}")
        if stages.get("dataset", {}).get("status") == "ran":
            self.error(f"hcpipe {tag}: the dataset stage ran again; it should have been cached")
        on_cpu = [n for n in TORCH_STAGES if lc.dig(stages.get(n, {}), "metrics", "device") == "cpu"]
        if on_cpu and (self.r["machine"].get("nvidia_smi_L") or "").strip():
            self.error(f"hcpipe {tag}: a GPU is here but these stages ran on the CPU: {on_cpu}")
        # The run record (newest in CACHE/runs) and the learning stages' metrics and logs.
        runs = sorted((Path(cache) / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
        if runs:
            try:
                rep["run_record"] = json.loads(runs[-1].read_text())
            except (OSError, json.JSONDecodeError) as e:
                self.error(f"hcpipe {tag}: reading the run record {runs[-1]}: {e}")
        if runs:
            shutil.copy(runs[-1], self.out / f"hcpipe-run-{tag}.json")
        (self.out / f"hcpipe-metrics-{tag}.json").write_text(json.dumps(
            {n: {"wall_s": stages[n].get("wall_s"), "status": stages[n].get("status"),
                 "metrics": stages[n].get("metrics")} for n in LEARNING if n in stages}, indent=1))
        logs = self.out / "logs" / f"hcpipe-{tag}-stages"
        for n, st in stages.items():
            src = Path(cache) / "logs" / f"{st.get('key')}.log"
            if src.is_file() and src.stat().st_size:
                logs.mkdir(exist_ok=True)
                shutil.copy(src, logs / f"{n}.log")
        self.r["hcpipe"].append(rep)
        self.save()
        if stages:
            log(f"hcpipe {tag}: wall {s['wall_s']:.2f} s; " + ", ".join(
                f"{n} {st.get('wall_s', 0):.2f} s" for n, st in stages.items() if n in TORCH_STAGES))

    def lab_rep(self, i, dataset):
        a = self.args
        cmd = [a.python, LAB, dataset, "--epochs", a.epochs, "--ae-epochs", a.ae_epochs,
               "--threads", a.lab_threads, "--num-workers", a.lab_num_workers]
        with GpuSampler(self.out / f"gpu-lab-{i}.csv") as g:
            s = self.step(f"lab-{i}", cmd, a.lab_timeout, minimum=20)
        out = last_json(s["stdout_text"]) or {}
        rep = {"rep": i, "wall": s["wall_s"], "ok": s["rc"] == 0 and bool(out), "rc": s["rc"],
               "timed_out": s["timed_out"], "gpu": g.summary(), **out}
        if s["rc"] == 0 and not out:
            self.error(f"lab rep {i}: no JSON on stdout")
        self.r["lab"].append(rep)
        self.save()
        if out:
            log(f"lab rep {i}: wall {s['wall_s']:.2f} s; stages " + ", ".join(
                f"{k} {v:.2f} s" for k, v in out.get("stages", {}).items()))

    def parity(self, hcpipe, pipeline, dataset):
        """The lab's test() on hcpipe's weights (lab.py --check-eval) of the last repetition."""
        ok = [x for x in self.r["hcpipe"] if x.get("ok")]
        first = [x for x in ok if x.get("variant") == self.args.variant[0][0]]
        run = (first or ok)[-1]
        self.r["parity"]["run"] = {"variant": run.get("variant"), "rep": run.get("rep")}
        cache = run["cache"]
        for side in ("left", "right"):
            paths = {}
            for stage in (f"cnn_{side}", f"eval_{side}"):
                s = self.step(f"show-{stage}", [hcpipe, "--cache", cache, "show", pipeline, stage, "--json"],
                              30, env=self.env)
                paths[stage] = (last_json(s["stdout_text"]) or {}).get("path")
            if not all(paths.values()):
                self.error(f"parity {side}: no cnn/eval artifact path")
                continue
            s = self.step(f"parity-{side}", [self.args.python, LAB, dataset, "--check-eval",
                                             Path(paths[f"cnn_{side}"]) / "weights.safetensors",
                                             "--region", side, "--metrics",
                                             Path(paths[f"eval_{side}"]) / "metrics.json",
                                             "--threads", self.args.lab_threads], 180, minimum=20)
            self.r["parity"][side] = last_json(s["stdout_text"])
            self.save()


# ---------------------------------------------------------------- the table


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return f"{a / b:.1f}×" if a is not None and b else "—"


def cell(xs, f=lc.fmt):
    """One value as it is; several as median (min–max)."""
    xs = [x for x in xs if x is not None]
    return f(xs[0]) if len(xs) == 1 else lc.cell(xs, f)


def render(r):
    """The markdown section (heading, tables, notes) from a results.json dict."""
    a = r.get("args", {})
    m = r.get("machine", {})
    # A failed run's stage times are partial: it is named below, not averaged.
    hc_all = [x for x in r.get("hcpipe", []) if x.get("stages") and x.get("ok")]
    hc_failed = [x for x in r.get("hcpipe", []) if not x.get("ok")]
    names = []
    for x in hc_all:
        if x.get("variant", "hcpipe") not in names:
            names.append(x.get("variant", "hcpipe"))
    hcv = {n: [x for x in hc_all if x.get("variant", "hcpipe") == n] for n in names}
    labels = {n: f"hcpipe ({n})" if len(names) > 1 or n != "hcpipe" else "hcpipe" for n in names}
    lab = [x for x in r.get("lab", []) if x.get("stages")]
    epochs, ae_epochs = a.get("epochs"), a.get("ae_epochs")
    counts = a.get("counts") or [None] * 4
    ref_ok = epochs == 30 and ae_epochs == 30
    ref = {"cnn_left": REFERENCE["cnn_left"], "cnn_right": REFERENCE["cnn_right"],
           "ae_left": REFERENCE["ae_per_epoch"] * (ae_epochs or 0)} if ref_ok else {}

    def hsum(rep, stages):
        ws = [rep["stages"].get(s, {}).get("wall_s") for s in stages]
        return None if any(w is None for w in ws) else sum(ws)

    def ratios(num, dens):
        """num ÷ each variant's value, joined with ' / '."""
        return " / ".join(ratio(num, d) for d in dens) if dens else "—"

    vh = " | ".join(labels[n] for n in names)
    va = "|".join("---:" for _ in names)
    per = " / ".join(names) if len(names) > 1 else ""
    head = (f"| stage | {vh}{' | ' if names else ''}lab.py | lab.py ÷ hcpipe{' (' + per + ')' if per else ''} | "
            f"lab, issue 8 (H100) | issue 8 ÷ hcpipe |\n|---|{va}{'|' if names else ''}---:|---:|---:|---:|")
    rows = []
    for label, hstages, lstage in ROWS:
        hv = {n: [hsum(x, hstages) for x in hcv[n]] for n in names}
        lv = [x["stages"].get(lstage) for x in lab] if lstage else []
        rv = ref.get(hstages[0]) if len(hstages) == 1 else None
        meds = [med(hv[n]) for n in names]
        cells = "".join(f" {cell(hv[n])} |" for n in names)
        rows.append(f"| {label} |{cells} {cell(lv)} | {ratios(med(lv), meds)} | "
                    f"{lc.fmt(rv) if rv else '—'} | {ratios(rv, meds)} |")
    hw = {n: [x.get("wall") for x in hcv[n] if x.get("ok")] for n in names}
    meds = [med(hw[n]) for n in names]
    lw = [x.get("wall") for x in lab if x.get("ok")]
    rt = REFERENCE["total"] if ref_ok else None
    cells = "".join(f" **{cell(hw[n])}** |" for n in names)
    rows.append(f"| **total, wall of the command** |{cells} **{cell(lw)}** | **{ratios(med(lw), meds)}** | "
                f"{'≈' + lc.fmt(rt) if rt else '—'} | **{ratios(rt, meds)}** |")
    li = [x["stages"].get("total") for x in lab]
    dash = "".join(" — |" for _ in names)
    rows.append(f"| *lab.py: its stages only (in-script, no Python start / imports)* |{dash} {cell(li)} | "
                f"{ratios(med(li), meds)} | — | — |")
    def stage_sum(x):
        return sum(st.get("wall_s") or 0 for k, st in x["stages"].items() if k != "dataset")

    cells = "".join(f" {cell([stage_sum(x) for x in hcv[n] if x.get('ok')])} |" for n in names)
    rows.append(f"| *hcpipe: sum of its stage times (they overlap)* |{cells} — | — | — | — |")

    # Per-epoch figures, devices, CUDA graphs.
    def hmet(n, stage, key):
        return [lc.dig(x["stages"].get(stage, {}), "metrics", key) for x in hcv[n]]

    def device_note(n, stage):
        devices = ", ".join(sorted({str(d) for d in hmet(n, stage, "device") if d})) or "?"
        graphs = sorted({"yes" if g else "no" for g in hmet(n, stage, "cuda_graph") if g is not None})
        return (f"{n}: " if len(names) > 1 else "") + devices + (f", graph {'/'.join(graphs)}" if graphs else "")

    ehead = (f"| network |{''.join(f' {labels[n]} s/epoch |' for n in names)} hcpipe device, CUDA graph | "
             f"lab.py s/epoch | lab.py ÷ hcpipe | lab, issue 8 |\n"
             f"|---|{''.join('---:|' for _ in names)}---|---:|---:|---:|")
    erows = []
    for label, stage, lstage, n_ep in (("CNN left", "cnn_left", "cnn_left", epochs),
                                       ("CNN right", "cnn_right", "cnn_right", epochs),
                                       ("autoencoder", "ae_left", "ae", ae_epochs)):
        hv = {n: hmet(n, stage, "seconds_per_epoch") for n in names}
        lv = [x["stages"].get(lstage) / n_ep if x["stages"].get(lstage) is not None and n_ep else None for x in lab]
        rv = (ref.get(stage) / n_ep) if ref.get(stage) and n_ep else None
        dev = "; ".join(device_note(n, stage) for n in names) or "—"
        cells = "".join(f" {cell(hv[n])} |" for n in names)
        erows.append(f"| {label} |{cells} {dev} | {cell(lv)} | {ratios(med(lv), [med(hv[n]) for n in names])} | "
                     f"{lc.fmt(rv) if rv else '—'} |")
    lab_dev = sorted({lc.dig(x, "config", "device") for x in lab if lc.dig(x, "config", "device")})

    mhead = (f"| result |{''.join(f' {labels[n]} |' for n in names)} lab.py |\n"
             f"|---|{''.join('---:|' for _ in names)}---:|")
    mrows = []
    if hc_all or lab:
        empty_h, l0 = {"stages": {}}, (lab[0] if lab else {"metrics": {}})
        for k, (label, _, _) in enumerate(lc.metric_rows(empty_h, l0)):
            cells = "".join(f" {cell([lc.metric_rows(x, l0)[k][1] for x in hcv[n]], lc.num)} |" for n in names)
            lv = [lc.metric_rows(empty_h, x)[k][2] for x in lab]
            mrows.append(f"| {label} |{cells} {cell(lv, lc.num)} |")

    prow = []
    parity = dict(r.get("parity") or {})
    prun = parity.pop("run", None) or {}
    for side, res in parity.items():
        if not res:
            prow.append(f"| {side} | — | — | — | — | **failed** |")
            continue
        v = res["validation"]
        prow.append(f"| {side} | {v['mean_loss']['hcpipe']:.6f} | {v['mean_loss']['lab']:.6f} | "
                    f"{v['balanced_accuracy']['hcpipe']:.4f} / {v['balanced_accuracy']['lab']:.4f} | "
                    f"{res['max_diff']:.2g} | {'**yes**' if res['agree'] else '**NO**'} |")

    gpu_lines = []
    for side, reps in [(labels[n], hcv[n]) for n in names] + [("lab.py", lab)]:
        gs = [x.get("gpu") for x in reps if x.get("gpu")]
        if gs:
            gpu_lines.append(
                f"{side}: GPU busy in {cell([g['busy_share'] * 100 for g in gs], lambda v: f'{v:.0f} %')} of "
                f"the samples, mean utilization {cell([g['util_mean_pct'] for g in gs], lambda v: f'{v:.0f} %')}, "
                f"peak memory {cell([g['mem_max_mib'] for g in gs], lambda v: f'{v:.0f} MiB')}")
    timeline = []
    for n in names:
        x = hcv[n][-1]
        st = {k: v for k, v in x["stages"].items() if v.get("bench_start_s") is not None and v.get("status") == "ran"}
        if st:
            parts = ", ".join(f"{k} {v['bench_start_s']:.1f}–{v['bench_end_s']:.1f}"
                              for k, v in sorted(st.items(), key=lambda kv: kv[1]["bench_start_s"]))
            timeline.append(f"- {labels[n]}, run {x.get('rep')} (wall {x.get('wall') or 0:.1f} s): {parts}")
    envs = {x.get("variant"): x.get("env") for x in hc_all}
    vdesc = "; ".join(f"`{n}`: " + (" ".join(f"{k}={v}" for k, v in (envs.get(n) or {}).items())
                                    or "the default environment") for n in names)
    ds = r.get("dataset") or {}
    lp = m.get("lab_python") or {}
    n_train = (counts[0] or 0) + (counts[1] or 0) if counts[0] is not None else "?"
    n_val = (counts[2] or 0) + (counts[3] or 0) if counts[2] is not None else "?"
    gpus = (m.get("nvidia_smi_L") or "none found").strip().replace("\n", "; ")
    reps = a.get("reps", 1)
    errors = r.get("errors") or []
    cmd = "python3 bench/lab_gpu.py " + shlex.join((r.get("argv") or [""])[1:])
    size = ("of the real lab_1 split's size" if counts == [58, 242, 15, 62]
            else "smaller than the real lab_1 split (58 / 242 train, 15 / 62 validation)")
    pin = " with `pin_memory=True` (as the lab)" if "cuda" in " ".join(lab_dev) else ""

    nl = "\n"
    return f"""
## The lab on a GPU: hcpipe vs the lab's Python (issue 8, table 3)

The DL4MI lab on synthetic data {size}: {n_train} train ({counts[0]} AD / {counts[1]} CN) and {n_val}
validation ({counts[2]} AD / {counts[3]} CN) subjects, 121×145×121 float32 volumes (8.5 MB each);
{epochs} CNN epochs per hippocampus and {ae_epochs} autoencoder epochs; on one GPU.
**hcpipe**: `hcpipe run` of pipelines/oasis.yaml (its resources: `gpu: 0.25` for both CNNs and the
AE, so they share the GPU at once) with the `dataset` stage replaced by `op: synth`, into a fresh
cache holding only the dataset; per-stage wall times from `run --json`{'. Runs: ' + vdesc if names else ''}.
**lab.py**: `bench/lab.py`, the seed notebook's code as a script (see the CPU table above), on the
same dataset folder with the same epochs, DataLoader `num_workers={a.get('lab_num_workers')}`{pin},
`torch.set_num_threads({a.get('lab_threads')})`, device {', '.join(lab_dev) or '?'}. Runs: {', '.join(f"{len(hcv[n])} of {labels[n]}" for n in names)}, {len(lab)} of lab.py{' (median (min–max))' if reps != 1 else ''}.{(' **Failed runs, left out of the figures:** ' + '; '.join(f"{x.get('variant')} run {x.get('rep')} (exit {x.get('rc')}, see its log)" for x in hc_failed) + '.') if hc_failed else ''}
The last two columns are issue 8's figures for the lab's own notebook on the real data on one
H100: {REFERENCE_TEXT}{'' if ref_ok else ' (shown only for 30/30 epochs)'}. Target: hcpipe ≥ 10×
faster than the lab end to end.

{head}
{nl.join(rows)}

hcpipe rows sum its stages (load / crop = crop_left + crop_right + demographics + old_validation;
evaluation = eval_left + eval_right + soft_vote); its stages overlap (independent branches run at
once), so its total is less than their sum, and a stage's time includes starting its worker
process and CUDA. lab.py runs one stage after the other; its total includes Python start, imports
and CUDA initialisation (and, after the lab's stages, one bare pass of its train loader that the
script times apart: {cell([lc.dig(x, 'extra', 'loader_pass_s') for x in lab])}). The synthetic dataset itself (the untimed `synth`
stage, {cell([ds.get('wall_s')])}) is in neither.
{(nl + "When hcpipe's stages ran (seconds since `hcpipe run` started, from when each stage's `--json` line came, less its wall_s):" + nl + nl + nl.join(timeline) + nl) if timeline else ''}
Per epoch (hcpipe: the stage's `seconds_per_epoch` metric; lab.py: the stage's time ÷ epochs,
which includes the lab's evaluation pass over the train loader after every CNN epoch):

{ehead}
{nl.join(erows)}

{('GPU (nvidia-smi every 250 ms during each run): ' + '; '.join(gpu_lines) + '.') if gpu_lines else 'No nvidia-smi samples.'}

Learning results (same hyper-parameters and seed 0 on both sides, different random streams, so
close but not equal; GMM cluster ids are arbitrary, so b and 1 − b are the same clustering):

{mhead}
{nl.join(mrows) if mrows else '| (no results) |' + ' — |' * (len(names) + 1)}
{(nl + "Parity on the same weights (the lab's test() on hcpipe's weights vs hcpipe's `evaluate`; run "
  + f"{prun.get('rep', '?')}, {prun.get('variant', '?')}):" + nl + nl
  + '| network | hcpipe mean_loss | lab test() mean_loss | balanced accuracy hcpipe / lab | max diff | agree (≤ 1e-5) |'
  + nl + '|---|---:|---:|---:|---:|---|' + nl + nl.join(prow) + nl) if prow else ''}
- Machine: {m.get('description', '?')}; GPU: {gpus}{('; ' + m['nvidia_smi_query'].replace(nl, '; ')) if m.get('nvidia_smi_query') else ''}.
- Versions: {m.get('hcpipe_version') or '?'}; {m.get('hcpipe_torch_version') or 'hcpipe-torch ?'}; lab.py: Python {lp.get('python', '?')}, torch {lp.get('torch', '?')} (CUDA {lp.get('cuda_version', '?')}, available: {lp.get('cuda_available', '?')}), numpy {lp.get('numpy', '?')}, pandas {lp.get('pandas', '?')}, scikit-learn {lp.get('sklearn', '?')}.
- Date: {r.get('started', '?')}; load average before: {m.get('loadavg_before', '?')}; the whole script took {(r.get('elapsed_s') or 0) / 60:.1f} min.
- Reproduce: `make build` (torch {lp.get('torch', '2.11.0+cu130')} wheel), then on the GPU machine
  `{cmd}`, then `python3 bench/lab_gpu.py --write-benchmarks OUT/results.json`.
{('- Errors during the run (see results.json and logs/): ' + '; '.join(e.splitlines()[0] for e in errors)) if errors else ''}
""".replace("\n\n\n", "\n\n")


def write_benchmarks(results_path, bench_path):
    r = json.loads(Path(results_path).read_text())
    section = render(r)
    lc.runner.write_section(section, BEGIN, END, path=bench_path, after=AFTER)
    print(section)
    print(f"written to {bench_path}")


# ---------------------------------------------------------------- main


def variant(s):
    name, _, rest = s.partition(":")
    if not re.fullmatch(r"[\w.-]+", name):
        raise argparse.ArgumentTypeError(f"{s!r}: NAME[:K=V,...], NAME of letters, digits, _ . -")
    env = {}
    for kv in filter(None, rest.split(",")):
        k, eq, v = kv.partition("=")
        if not eq or not k:
            raise argparse.ArgumentTypeError(f"{kv!r}: K=V")
        env[k] = v
    return (name, env)


def counts(s):
    xs = [int(x) for x in s.split(",")]
    if len(xs) != 4 or min(xs) < 1:
        raise argparse.ArgumentTypeError("four positive integers: n_train_ad,n_train_cn,n_val_ad,n_val_cn")
    return xs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write-benchmarks", metavar="RESULTS_JSON",
                    help="only put the table of RESULTS_JSON into BENCHMARKS.md")
    ap.add_argument("--benchmarks", type=Path, default=BENCHMARKS, help="the file --write-benchmarks edits")
    ap.add_argument("--bin", help="folder holding hcpipe and hcpipe-torch")
    ap.add_argument("--work", help="scratch folder: pipelines and caches (the cache-* folders of a previous run are deleted)")
    ap.add_argument("--out", help="results folder: results.json, table.md, logs/")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--ae-epochs", type=int, default=30)
    ap.add_argument("--counts", type=counts, default=[58, 242, 15, 62],
                    help="n_train_ad,n_train_cn,n_val_ad,n_val_cn (default: the lab_1 split, 377 subjects)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--lab-reps", type=int, default=None,
                    help="lab.py runs in the first N repetitions only (default: every one); it takes "
                         "~20x as long as hcpipe, so medians of hcpipe fit a device lease this way")
    ap.add_argument("--skip-lab", action="store_true")
    ap.add_argument("--lab-num-workers", type=int, default=8)
    ap.add_argument("--lab-threads", type=int, default=len(os.sched_getaffinity(0)) or 1,
                    help="lab.py's torch.set_num_threads (default: nproc, torch's default)")
    ap.add_argument("--python", default="python3", help="the python that runs lab.py (torch, numpy, pandas, ...)")
    ap.add_argument("--torch-lib", default="auto", help="auto | none | DIR: LD_LIBRARY_PATH for hcpipe-torch")
    ap.add_argument("--budget", type=float, default=450,
                    help="seconds for the whole script; each step's timeout is bounded by what is left")
    ap.add_argument("--hcpipe-timeout", type=float, default=300, help="cap for one timed hcpipe run")
    ap.add_argument("--lab-timeout", type=float, default=420, help="cap for one lab.py run")
    ap.add_argument("--dataset-timeout", type=float, default=240, help="cap for one synth (dataset) run")
    ap.add_argument("--allow-cpu", action="store_true",
                    help="run hcpipe even when a GPU is present but hcpipe-torch sees no CUDA")
    ap.add_argument("--variant", action="append", type=variant, metavar="NAME[:K=V,...]",
                    help="an hcpipe run with these environment variables (repeatable); default: "
                         "--variant default --variant per-stage:HCPIPE_TORCH_SERVER=0 --variant eager:HCPIPE_CUDA_GRAPHS=0")
    ap.add_argument("--parity", action="store_true",
                    help="at the end, the lab's test() on hcpipe's weights (lab.py --check-eval)")
    args = ap.parse_args()
    if not args.variant:
        args.variant = [("default", {}), ("per-stage", {"HCPIPE_TORCH_SERVER": "0"}),
                        ("eager", {"HCPIPE_CUDA_GRAPHS": "0"})]
    if len({v[0] for v in args.variant}) != len(args.variant):
        ap.error("--variant: two variants with one name")
    if args.write_benchmarks:
        write_benchmarks(args.write_benchmarks, args.benchmarks)
        return 0
    if not (args.bin and args.work and args.out):
        ap.error("--bin, --work and --out are needed (or --write-benchmarks RESULTS_JSON)")
    hcpipe, worker = Path(args.bin).resolve() / "hcpipe", Path(args.bin).resolve() / "hcpipe-torch"
    for b in (hcpipe, worker):
        if not os.access(b, os.X_OK):
            ap.error(f"{b} is missing or not executable")

    signal.signal(signal.SIGTERM, _on_term)
    b = Bench(args)
    rc = 0
    try:
        rc = run(b, hcpipe, worker)
    except (KeyboardInterrupt, Interrupted) as e:
        b.error(f"interrupted ({e!r}); results so far are kept")
        rc = 130
    except Exception as e:  # a bug here must not lose what was measured
        import traceback
        b.error(f"lab_gpu.py crashed: {e!r}\n{traceback.format_exc()}")
        rc = 1
    finally:
        b.r["finished"] = now_utc()
        b.r["machine"]["loadavg_after"] = lc.loadavg()
        b.save()
        try:
            table = render(b.r)
        except Exception as e:
            import traceback
            table = f"(table failed: {e!r})\n{traceback.format_exc()}"
        (b.out / "table.md").write_text(table)
        print(f"\nresults: {b.out / 'results.json'}   table: {b.out / 'table.md'}\n", flush=True)
        print(table, flush=True)
        if b.r["errors"]:
            print(f"{len(b.r['errors'])} error(s): " + " | ".join(e.splitlines()[0] for e in b.r["errors"]))
            rc = rc or 1
    return rc


def run(b, hcpipe, worker):
    a = b.args
    b.machine_info(hcpipe, worker)
    m = b.r["machine"]
    gpu_here = bool((m.get("nvidia_smi_L") or "").strip())
    # Only an explicit "CUDA not available" counts (a --version that failed or changed its
    # wording does not stop the run; the stages' `device` metrics tell afterwards).
    worker_no_cuda = "CUDA not available" in (m.get("hcpipe_torch_version") or "")
    skip_hcpipe = False
    if gpu_here and worker_no_cuda:
        b.error(f"nvidia-smi lists a GPU but hcpipe-torch says: {m.get('hcpipe_torch_version')!r} "
                f"(LD_LIBRARY_PATH={m.get('ld_library_path')}); "
                + ("running hcpipe anyway (--allow-cpu)" if a.allow_cpu else
                   "skipping hcpipe's timed runs, which would train on the CPU (--allow-cpu to force)"))
        skip_hcpipe = not a.allow_cpu
    lp = m.get("lab_python") or {}
    if gpu_here and not lp.get("cuda_available"):
        b.error(f"nvidia-smi lists a GPU but {a.python}'s torch sees no CUDA: {lp}")

    pipeline, dataset_only = b.pipelines()
    for old in b.work.glob("cache-*"):
        if old.is_dir() and re.fullmatch(r"cache-(\d+-[\w.-]+|lab|seed)", old.name):
            shutil.rmtree(old)

    variants = [] if skip_hcpipe else a.variant
    for i in range(1, a.reps + 1):
        # The first variant, then lab.py, then the other variants; reversed every other repetition.
        order = [("hcpipe", v) for v in variants[:1]] + [("lab", None)] + [("hcpipe", v) for v in variants[1:]]
        if i % 2 == 0:
            order.reverse()
        for side, v in order:
            if side == "hcpipe":
                b.hcpipe_rep(i, v, hcpipe, b.work / f"cache-{i}-{v[0]}", pipeline, dataset_only)
            elif not a.skip_lab and i <= (a.lab_reps or a.reps):
                if not b.lab_dataset:  # no hcpipe run before: a cache of its own
                    b.dataset("lab", hcpipe, b.work / "cache-lab", dataset_only)
                if b.lab_dataset:
                    b.lab_rep(i, b.lab_dataset)
                else:
                    b.error("no dataset folder for lab.py")
    if a.parity and b.lab_dataset and any(x.get("ok") for x in b.r["hcpipe"]):
        b.parity(hcpipe, pipeline, b.lab_dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
