"""Scale figures (issue 14): traces of a million small stages, and traces of a few huge stages.

Every measurement runs in its own fresh Python process (this script re-run with ``--child``), so
its peak RSS (``ru_maxrss`` of that process) is the step's alone. Sections:

``million``: two traces of N small stages (default 1,000,000: 8 float32 values each, the
candidate = reference with 1-ulp noise on some values and one real divergence at stage 0.7 N),
for two key families: solver iterations ``iter.N.residual`` and decode steps ``step.N.logits``
(``*.logits`` stages also get logits metrics). Measured:

* writing each trace with ``TraceWriter.add_batch`` (100,000 stages per call: the fastest
  public writer; one call of a million is slower and holds more memory);
* ``load_trace`` in a fresh process (page cache warm), iterating the stage metadata, a plain
  listing (one line per stage, the columns of ``parity show --no-stats``), and the CLI
  ``parity show --no-stats`` itself;
* ``compare_traces`` of the pair (default options, diagnoses on), stages/s and peak RSS, and as
  the baseline the same call with the column plan switched off (parity.compare.columns: the
  engine then makes each stage's ``Stage`` objects and batches runs itself);
* the CLI ``parity diff`` (import, load, compare, the table) and ``parity diff --json``;
* floors on the same files: a per-stage NumPy check over arrays read with
  ``safetensors.numpy.load_file``, and one vectorised NumPy pass per data file (each stage a row
  of a matrix: per-stage mismatch count, max |error| and its index, and the four float64 sums
  behind RMS / cosine / SQNR), which is what a batched comparison path could reach.

``big``: two traces of G GiB each in a few large stages (at most 256 MiB each), page cache warm.
``compare_traces`` GB/s (both inputs counted) with its peak RSS and peak anonymous memory (file
pages of the memory maps are reclaimable, anonymous memory is not), against a memory-read floor
(``np.dot`` over parity's memory maps) and a plain NumPy loop over arrays read with safetensors.

Steps that would run long today stop at ``--budget`` seconds: ``compare_traces`` then reports its
rate over the stages done so far (marked ``partial``) and how its RSS grew per 100,000 stages; the
CLI listing reports that it did not finish. Rates are given per wall second and per CPU second
of the step's process: on a shared machine other work inflates wall time only (the load average is
printed too), so the ``million`` ratios, whose steps are single-threaded, use CPU time; ``big``
compares with two threads and its ratios use wall time.

    python benchmarks/scale.py [million] [big] [--stages 1000000[,100000...]] [--big-gib 2]
                               [--keys both|residual|logits] [--budget 30] [--quick]
                               [--report-json] [--dir DIR] [--keep]

``dask``: the same diff (diagnoses on) single-process and on a local Dask cluster
(``compare_traces(scheduler=client)``, processes, one thread each) of 1 and 2 workers, on the
``big`` data and on ``--dask-stages`` small stages: wall seconds, speed-up and overhead versus the
single-process diff, the cluster's start-up apart, and whether the ``--json`` bytes are identical.

``--quick``: 100,000 stages, 0.5 GiB, a 5 s budget (well under a minute). More sections (a trace
larger than half the RAM) are one more ``section_*`` function in ``SECTIONS`` plus the child steps
they run, registered in ``STEPS``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

ELEMS = 8  # float32 values per small stage
CALL_STAGES = 100_000  # stages per add_batch call
BIG_STAGE_BYTES = 256 * 2**20
GOAL_LOAD_S = 1.0
GOAL_DIFF_RATE = 200_000
KEY_FAMILIES = {"residual": "iter.{}.residual", "logits": "step.{}.logits"}
RSS_SAMPLE_EVERY = 10_000  # stages between RSS samples of a running diff
# compare_traces st/cpu-s before runs of small stages were judged in one kernel call (issue 14 item 4:
# a 1M-stage pair on 2 CPUs, stage by stage, 4154 MiB peak): the ratios below are against these
BEFORE_DIFF_RATE = {"residual": 13_600, "logits": 5_300}


# ------------------------------------------------------------------------------------------------
# child side: one step per process


class OverBudget(BaseException):
    """Raised inside a child when its step passes the time budget (a BaseException, so that the
    CLI's own ``except Exception`` does not turn it into an internal error)."""


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    """Wall and CPU seconds of one step, and the process's peak RSS when it ends."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), _cpu()

    def elapsed(self) -> float:
        return time.perf_counter() - self.wall0

    def done(self, **extra: Any) -> dict[str, Any]:
        return {"wall": self.elapsed(), "cpu": _cpu() - self.cpu0, "rss": _maxrss_mib(), **extra}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Samples RssAnon and RssFile every few milliseconds in a background thread (MiB)."""

    def __init__(self) -> None:
        self.anon = self.file = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.anon = max(self.anon, _status_kib("RssAnon") / 1024)
        self.file = max(self.file, _status_kib("RssFile") / 1024)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.005)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _noisy_copy(ref: np.ndarray, diverge_at: int | None) -> np.ndarray:
    """The candidate's values: ``ref`` with every 97th value 1 ulp up, and one value off by 0.5."""
    cand = ref.copy()
    cand[::97] = np.nextafter(cand[::97], np.float32(np.inf))
    if diverge_at is not None:
        cand[diverge_at] += np.float32(0.5)
    return cand


def _du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(path) for n in names)


def step_write_small(p: dict[str, Any]) -> dict[str, Any]:
    from parity.trace.writer import TraceWriter

    n, template = p["stages"], p["template"]
    keys = [template.format(i) for i in range(n)]
    ref = np.random.default_rng(0).standard_normal(n * ELEMS, dtype=np.float32)
    out: dict[str, Any] = {}
    for side, values in (("ref", ref), ("cand", _noisy_copy(ref, p["diverge"] * ELEMS + 3))):
        path = os.path.join(p["dir"], f"{side}.trace")
        clock = Clock()
        with TraceWriter(path, volatile=False) as w:
            for s in range(0, n, CALL_STAGES):
                part = keys[s:s + CALL_STAGES]
                w.add_batch(part, [(ELEMS,)] * len(part), values[s * ELEMS:(s + len(part)) * ELEMS])
        out[side] = clock.done(bytes=_du(path), manifest=os.path.getsize(os.path.join(path, "manifest.json")))
    return out


def step_open_small(p: dict[str, Any]) -> dict[str, Any]:
    clock = Clock()
    import parity

    out: dict[str, Any] = {"import": clock.done()}
    clock = Clock()
    t = parity.load_trace(p["path"])
    out["load"] = clock.done(stages=len(t))
    clock = Clock()
    meta = [(s.key, s.dtype, s.shape, s.position) for s in t]
    out["iterate"] = clock.done(stages=len(meta))
    del meta
    clock = Clock()
    total = sum(s.nbytes for s in t)
    out["nbytes"] = clock.done(stages=len(t), total=total)
    clock = Clock()
    buf = io.StringIO()
    for s in t:
        buf.write(f"{s.position + 1}\t{s.key}\t{s.dtype or 'text'}\t{'×'.join(map(str, s.shape)) or 'scalar'}\t"
                  f"{','.join(s.axes) if s.axes else ''}\t{s.units or ''}\n")
    out["listing"] = clock.done(stages=len(t), chars=buf.tell())
    return out


def _alarm(seconds: float) -> None:
    def fire(signum: int, frame: object) -> None:
        raise OverBudget()

    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def step_show_cli(p: dict[str, Any]) -> dict[str, Any]:
    return {"show": _cli(["show", "--no-stats", p["path"]], p["budget"])}


def step_diff_cli(p: dict[str, Any]) -> dict[str, Any]:
    """``parity diff REF CAND`` (the table) or with ``--json``, output discarded."""
    return {"diff": _cli(["diff", *p["flags"], p["ref"], p["cand"]], p["budget"])}


def _cli(args: list[str], budget: float) -> dict[str, Any]:
    """The CLI ``parity ARGS`` in this process, its stdout discarded, stopped after ``budget`` s."""
    from parity.cli import main

    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1)
    clock = Clock()
    _alarm(budget)
    try:
        os.dup2(devnull, 1)
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code
        finished = True
    except OverBudget:
        rc, finished = None, False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout.flush()
        os.dup2(saved, 1)
    return clock.done(rc=rc, finished=finished)


def step_diff_small(p: dict[str, Any]) -> dict[str, Any]:
    import parity

    if p.get("no_columns"):  # the baseline: the engine without the column plan (stage objects, runs of judge())
        from parity.compare import columns

        columns.ColumnPlan.build = classmethod(lambda cls, *a, **k: None)  # type: ignore[method-assign]
    clock = Clock()
    rt, ct = parity.load_trace(p["ref"]), parity.load_trace(p["cand"])
    out: dict[str, Any] = {"load_both": clock.done()}
    samples: list[tuple[int, float]] = []
    clock = Clock()
    budget = p["budget"]

    def progress(done: int, total: int, key: str) -> None:  # (called per stage, or per run of stages)
        if done - (samples[-1][0] if samples else 0) >= RSS_SAMPLE_EVERY:
            samples.append((done, _maxrss_mib()))
            if clock.elapsed() > budget:
                raise OverBudget()

    try:
        diff = parity.compare_traces(rt, ct, progress=progress)
    except OverBudget:
        done = samples[-1][0]
        out["compare"] = clock.done(stages=done, finished=False, first=None)
    else:
        first = diff.first_divergence
        out["compare"] = clock.done(stages=len(diff.stages), finished=True, first=first.key if first else None)
        if p.get("report_json"):
            jclock = Clock()
            text = json.dumps(diff.to_dict())
            out["json"] = jclock.done(chars=len(text))
    if len(samples) >= 2:  # RSS growth while comparing: the results held per stage
        (d0, r0), (d1, r1) = samples[0], samples[-1]
        out["compare"]["rss_per_100k"] = (r1 - r0) / (d1 - d0) * 100_000 if d1 > d0 else 0.0
    return out


def _tolerance() -> tuple[float, float]:
    from parity.compare.tolerance import default_tolerance

    tol = default_tolerance("F32", "F32")
    return tol.rtol, tol.atol


def _data_files(trace: str) -> list[str]:
    data = os.path.join(trace, "data")
    return [os.path.join(data, n) for n in sorted(os.listdir(data))]


def step_floor_loop(p: dict[str, Any]) -> dict[str, Any]:
    """Per-stage NumPy check over arrays read with safetensors: the plain loop a user would write."""
    from safetensors.numpy import load_file

    rtol, atol = _tolerance()
    clock = Clock()
    fails, count, read_s = [], 0, 0.0
    for rf, cf in zip(_data_files(p["ref"]), _data_files(p["cand"]), strict=True):
        t = time.perf_counter()
        r_all, c_all = load_file(rf), load_file(cf)
        read_s += time.perf_counter() - t
        for name, r in r_all.items():
            c = c_all[name]
            count += 1
            if np.any(np.abs(c - r) > atol + rtol * np.abs(r)):
                fails.append(name)
    return {"loop": clock.done(stages=count, fails=fails, read=read_s)}


def _header(path: str) -> tuple[list[str], int, dict[str, Any]]:
    """Names in data order, the data offset, and the header of a safetensors file."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    names = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    return names, 8 + n, header


def step_floor_batched(p: dict[str, Any]) -> dict[str, Any]:
    """One vectorised NumPy pass per data file: every stage is a row of an (n, ELEMS) matrix."""
    rtol, atol = _tolerance()
    clock = Clock()
    fails: list[str] = []
    columns: list[tuple[np.ndarray, ...]] = []
    count, header_s = 0, 0.0
    for rf, cf in zip(_data_files(p["ref"]), _data_files(p["cand"]), strict=True):
        t = time.perf_counter()
        (rn, rstart, rh), (cn, cstart, _) = _header(rf), _header(cf)
        header_s += time.perf_counter() - t
        assert rn == cn and all(rh[k]["dtype"] == "F32" and rh[k]["shape"] == [ELEMS] for k in rn), "uniform stages"
        r = np.fromfile(rf, np.float32, offset=rstart).reshape(len(rn), ELEMS).astype(np.float64)
        c = np.fromfile(cf, np.float32, offset=cstart).reshape(len(cn), ELEMS).astype(np.float64)
        d = np.abs(c - r)
        mismatched = np.count_nonzero(d > atol + rtol * np.abs(r), axis=1)
        sums = [np.einsum("ij,ij->i", x, y) for x, y in ((d, d), (r, r), (c, c), (r, c))]
        columns.append((mismatched, d.max(axis=1), d.argmax(axis=1), *sums))  # per-stage results, columnar
        fails += [rn[i] for i in np.flatnonzero(mismatched)]
        count += len(rn)
    return {"batched": clock.done(stages=count, fails=fails, headers=header_s)}


def step_write_big(p: dict[str, Any]) -> dict[str, Any]:
    from parity.trace.writer import TraceWriter

    total, per = p["bytes"], p["stage_bytes"]
    n_stages = max(1, total // per)
    elems = per // 4
    rng = np.random.default_rng(0)
    paths = [os.path.join(p["dir"], f"{side}.trace") for side in ("ref", "cand")]
    clock = Clock()
    with TraceWriter(paths[0], volatile=False) as wr, TraceWriter(paths[1], volatile=False) as wc:
        for i in range(n_stages):
            r = rng.standard_normal(elems, dtype=np.float32)
            wr.add(f"layers.{i}.out", r)
            wc.add(f"layers.{i}.out", _noisy_copy(r, elems // 3 if i == n_stages // 2 else None))
            del r
    return {"write": clock.done(stages=n_stages, bytes=sum(_du(x) for x in paths), first=f"layers.{n_stages // 2}.out")}


def step_diff_big(p: dict[str, Any]) -> dict[str, Any]:
    import parity

    with PeakMemory() as mem:
        base_anon = _status_kib("RssAnon") / 1024
        clock = Clock()
        diff = parity.compare_traces(p["ref"], p["cand"])
        first = diff.first_divergence
        res = clock.done(first=first.key if first else None, stages=len(diff.stages))
    res.update(anon=mem.anon - base_anon, file=mem.file)
    return {"diff": res}


def step_floor_read(p: dict[str, Any]) -> dict[str, Any]:
    """Memory-read floor: ``np.dot`` of each stage pair over parity's memory maps (reads both once)."""
    import parity

    rt, ct = parity.load_trace(p["ref"]), parity.load_trace(p["cand"])
    with PeakMemory() as mem:
        base_anon = _status_kib("RssAnon") / 1024
        clock = Clock()
        for s in rt:
            np.dot(rt.array(s).reshape(-1), ct[s.key].reshape(-1))
        res = clock.done()
    res.update(anon=mem.anon - base_anon, file=mem.file)
    return {"read": res}


def step_floor_numpy_big(p: dict[str, Any]) -> dict[str, Any]:
    """Plain NumPy loop over arrays read whole with safetensors (``safe_open(...).get_tensor``)."""
    from safetensors import safe_open

    rtol, atol = _tolerance()
    fails = []
    with PeakMemory() as mem:
        base_anon = _status_kib("RssAnon") / 1024
        clock = Clock()
        for rf, cf in zip(_data_files(p["ref"]), _data_files(p["cand"]), strict=True):
            with safe_open(rf, framework="numpy") as fr, safe_open(cf, framework="numpy") as fc:
                for name in fr.keys():
                    r, c = fr.get_tensor(name), fc.get_tensor(name)
                    if np.count_nonzero(np.abs(c - r) > atol + rtol * np.abs(r)):
                        fails.append(name)
                    del r, c
        res = clock.done(fails=fails)
    res.update(anon=mem.anon - base_anon, file=mem.file)
    return {"numpy": res}


def step_diff_dask(p: dict[str, Any]) -> dict[str, Any]:
    """The diff single-process (``workers`` 0) or on a fresh local cluster of ``workers`` processes."""
    import hashlib

    import parity
    from parity.report.json import render_json

    out: dict[str, Any] = {}
    if p["workers"] == 0:
        clock = Clock()
        diff = parity.compare_traces(p["ref"], p["cand"])
        out["diff"] = clock.done()
    else:
        from distributed import Client, LocalCluster

        clock = Clock()
        with LocalCluster(n_workers=p["workers"], threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
                Client(cl) as client:
            client.wait_for_workers(p["workers"])
            out["start"] = clock.done()
            clock = Clock()
            diff = parity.compare_traces(p["ref"], p["cand"], scheduler=client)
            out["diff"] = clock.done()
    first = diff.first_divergence
    out["diff"].update(first=first.key if first else None,
                       json=hashlib.sha256(render_json(diff).encode()).hexdigest())
    return out


STEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "write_small": step_write_small,
    "open_small": step_open_small,
    "show_cli": step_show_cli,
    "diff_cli": step_diff_cli,
    "diff_small": step_diff_small,
    "floor_loop": step_floor_loop,
    "floor_batched": step_floor_batched,
    "write_big": step_write_big,
    "diff_big": step_diff_big,
    "floor_read": step_floor_read,
    "floor_numpy_big": step_floor_numpy_big,
    "diff_dask": step_diff_dask,
}


def child_main(step: str, params: str) -> None:
    result = STEPS[step](json.loads(params))
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


# ------------------------------------------------------------------------------------------------
# parent side


def run_step(step: str, **params: Any) -> dict[str, Any]:
    """Run ``step`` in a fresh interpreter; its result dict."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", step, json.dumps(params)],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"step {step} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def _fmt_rate(x: float, unit: str) -> str:
    return f"{x:.2f} GB/s" if unit == "GB/s" else f"{x:,.0f} st/s"


def rate(r: dict[str, Any], amount: float, unit: str = "st/s", clock: str = "cpu") -> float:
    """``amount`` (stages, or bytes for GB/s) per second of ``clock`` ("wall" or "cpu") of step ``r``."""
    return amount / max(r[clock], 1e-9) / (1e9 if unit == "GB/s" else 1)


def row(name: str, r: dict[str, Any], amount: float | None = None, unit: str = "st/s", note: str = "") -> None:
    """One table row: wall s, cpu s, rate over ``amount`` per wall and per CPU second, peak RSS MiB."""
    by_wall = by_cpu = ""
    if amount is not None:
        by_wall, by_cpu = (_fmt_rate(rate(r, amount, unit, c), unit) for c in ("wall", "cpu"))
    print(f"  {name:<46}{r['wall']:>8.2f}{r['cpu']:>8.2f}{by_wall:>16}{by_cpu:>16}{r['rss']:>9.0f}  {note}")


def header(title: str) -> None:
    print(f"\n== {title} (load average {os.getloadavg()[0]:.2f})")
    print(f"  {'step':<46}{'wall s':>8}{'cpu s':>8}{'rate/wall s':>16}{'rate/cpu s':>16}{'RSS MiB':>9}"
          "  (RSS: peak of that process)")


def ratio(text: str) -> None:
    print(f"  -> {text}")


def section_million(args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    figures: dict[int, dict[str, float]] = {}
    for n in args.stages:
        diverge = int(n * 0.7)
        families = list(KEY_FAMILIES) if args.keys == "both" else [args.keys]
        header(f"million: {n:,} stages x {ELEMS} float32, candidate diverges at stage {diverge:,}; "
               f"budget {args.budget:g} s per long step")
        pairs = {}
        for fam in families:
            d = os.path.join(workdir, f"small-{n}-{fam}")
            os.makedirs(d, exist_ok=True)
            w = run_step("write_small", dir=d, stages=n, template=KEY_FAMILIES[fam], diverge=diverge)
            for side in ("ref", "cand"):
                row(f"write {side} ({KEY_FAMILIES[fam]}, add_batch)", w[side], n,
                    note=f"{w[side]['bytes'] / 2**20:.0f} MiB on disk, manifest {w[side]['manifest'] / 2**20:.0f} MiB")
            pairs[fam] = (os.path.join(d, "ref.trace"), os.path.join(d, "cand.trace"))
        ref, cand = pairs[families[0]]

        o = run_step("open_small", path=ref)
        row("import parity", o["import"])
        row("load_trace (fresh process)", o["load"], n, note=f"goal <= {GOAL_LOAD_S:g} s")
        row("iterate stages: (key, dtype, shape, position)", o["iterate"], n)
        row("iterate stages: sum(stage.nbytes)", o["nbytes"], n)
        row("listing, one line per stage (show's columns)", o["listing"], n)
        s = run_step("show_cli", path=ref, budget=args.budget)["show"]
        row("parity show --no-stats (CLI, output discarded)", s, n if s["finished"] else None,
            note="" if s["finished"] else f"NOT FINISHED within the {args.budget:g} s budget")

        diff_rate, base_rate, cli_rate = {}, {}, {}
        for fam in families:
            r, c = pairs[fam]
            res = run_step("diff_small", ref=r, cand=c, budget=args.budget, report_json=args.report_json)
            row(f"load_trace x2 ({fam})", res["load_both"], 2 * n)
            cmp_ = res["compare"]
            grow = cmp_.get("rss_per_100k")
            note = (f"first divergence {cmp_['first']}" if cmp_["finished"]
                    else f"partial: {cmp_['stages']:,} of {n:,} stages in the budget")
            if grow is not None:
                note += f"; RSS +{grow:.0f} MiB per 100k stages compared"
            row(f"compare_traces ({fam})", cmp_, cmp_["stages"], note=note)
            if cmp_["finished"]:
                assert cmp_["first"] == KEY_FAMILIES[fam].format(diverge), cmp_["first"]
            if "json" in res:
                row("  TraceDiff.to_dict() + json.dumps", res["json"], n,
                    note=f"{res['json']['chars'] / 1e6:.0f} MB of JSON")
            diff_rate[fam] = rate(cmp_, cmp_["stages"])
            base = run_step("diff_small", ref=r, cand=c, budget=args.budget, no_columns=True)["compare"]
            row(f"  baseline: compare_traces without the column plan ({fam})", base, base["stages"],
                note=f"first divergence {base['first']}" if base["finished"] else
                f"partial: {base['stages']:,} of {n:,} stages in the budget")
            base_rate[fam] = rate(base, base["stages"])
            for flags in ([], ["--json"]):
                cli = run_step("diff_cli", ref=r, cand=c, flags=flags, budget=args.budget)["diff"]
                row(f"  parity diff {' '.join(flags) or '(table)'} (CLI, output discarded)", cli,
                    n if cli["finished"] else None,
                    note=f"exit {cli['rc']}" if cli["finished"] else f"NOT FINISHED within the {args.budget:g} s budget")
                if not flags and cli["finished"]:
                    cli_rate[fam] = rate(cli, n)

        loop = run_step("floor_loop", ref=ref, cand=cand)["loop"]
        row("floor: safetensors load_file + NumPy per stage", loop, n,
            note=f"{loop['read']:.2f} s of it in load_file; fails: {loop['fails']}")
        batched = run_step("floor_batched", ref=ref, cand=cand)["batched"]
        row("floor: one NumPy pass per data file (batched)", batched, n,
            note=f"{batched['headers']:.2f} s of it parsing the JSON headers; fails: {batched['fails']}")
        expected = [KEY_FAMILIES[families[0]].format(diverge)]
        assert loop["fails"] == expected and batched["fails"] == expected, (loop["fails"], batched["fails"])

        # Ratios per CPU second: these steps are single-threaded, so on an idle machine CPU time is
        # the wall time, and other work on a shared machine inflates wall time only.
        load_s = o["load"]["cpu"]
        ratio(f"load_trace {load_s:.2f} cpu s = {load_s / GOAL_LOAD_S:.1f}x the {GOAL_LOAD_S:g} s goal; "
              f"peak RSS {o['load']['rss']:.0f} MiB for a {w['ref']['bytes'] / 2**20:.0f} MiB trace")
        loop_rate, batched_rate = rate(loop, n), rate(batched, n)
        for fam, r_ in diff_rate.items():
            ratio(f"compare_traces ({fam}) {r_:,.0f} st/cpu-s = {r_ / GOAL_DIFF_RATE:.3f}x the {GOAL_DIFF_RATE:,} st/s "
                  f"goal; {r_ / base_rate[fam]:.2f}x the engine without the column plan ({base_rate[fam]:,.0f} st/cpu-s, "
                  f"this run); {r_ / loop_rate:.3f}x the per-stage NumPy floor, {r_ / batched_rate:.4f}x the batched "
                  f"floor; {r_ / BEFORE_DIFF_RATE[fam]:.1f}x the {BEFORE_DIFF_RATE[fam]:,} st/s of the stage-by-stage engine")
            if fam in cli_rate:
                ratio(f"parity diff ({fam}, the CLI: import, load, compare, table) {cli_rate[fam]:,.0f} st/cpu-s = "
                      f"{cli_rate[fam] / GOAL_DIFF_RATE:.3f}x the {GOAL_DIFF_RATE:,} st/s goal")
        figures[n] = {"load": load_s, "diff": diff_rate[families[0]], "load_rss": o["load"]["rss"]}
    if len(figures) > 1:
        (n0, f0), (n1, f1) = sorted(figures.items())[0], sorted(figures.items())[-1]
        ratio(f"scaling {n0:,} -> {n1:,} stages ({n1 / n0:g}x): load_trace {f1['load'] / f0['load']:.1f}x the cpu "
              f"time, {f1['load_rss'] / f0['load_rss']:.1f}x the RSS; "
              f"compare_traces rate {f1['diff'] / f0['diff']:.2f}x")
    return figures


def _warm(*traces: str) -> None:
    """Read every file once, so that each method finds the page cache in the same (warm) state."""
    for t in traces:
        for root, _, names in os.walk(t):
            for n in names:
                with open(os.path.join(root, n), "rb") as f:
                    while f.read(1 << 24):
                        pass


def section_big(args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    total = int(args.big_gib * 2**30)
    per = min(BIG_STAGE_BYTES, max(total // 2, 4096))
    d = os.path.join(workdir, "big")
    os.makedirs(d, exist_ok=True)
    ref, cand = os.path.join(d, "ref.trace"), os.path.join(d, "cand.trace")
    try:
        header(f"big: 2 traces x {args.big_gib:g} GiB in stages of {per / 2**20:.0f} MiB (float32), page cache warm; "
               "rate counts both inputs")
        w = run_step("write_big", dir=d, bytes=total, stage_bytes=per)["write"]
        both = 2 * w["stages"] * per
        row(f"write both traces ({w['stages']} stages each, add)", w, both, "GB/s",
            note="includes generating the values")
        _warm(ref, cand)
        res = run_step("diff_big", ref=ref, cand=cand)["diff"]
        assert res["first"] == w["first"], res["first"]
        row("compare_traces", res, both, "GB/s",
            note=f"peak anon +{res['anon']:.0f} MiB, file pages {res['file']:.0f} MiB")
        rd = run_step("floor_read", ref=ref, cand=cand)["read"]
        row("floor: memory read (np.dot over parity's mmaps)", rd, both, "GB/s",
            note=f"peak anon +{rd['anon']:.0f} MiB, file pages {rd['file']:.0f} MiB")
        npl = run_step("floor_numpy_big", ref=ref, cand=cand)["numpy"]
        row("floor: safetensors get_tensor + NumPy check", npl, both, "GB/s",
            note=f"peak anon +{npl['anon']:.0f} MiB; fails {len(npl['fails'])}")
        # wall time here: compare_traces reads a large stage with 2 threads
        ratio(f"compare_traces at {rate(res, both, 'GB/s', 'wall'):.2f} GB/s = {rd['wall'] / res['wall']:.2f}x the "
              f"memory-read rate, {npl['wall'] / res['wall']:.2f}x the safetensors+NumPy loop (wall time)")
        ratio(f"peak anonymous memory: compare_traces +{res['anon']:.0f} MiB vs the NumPy loop +{npl['anon']:.0f} MiB "
              f"for {per / 2**20:.0f} MiB stages (ru_maxrss counts mapped file pages too: {res['rss']:.0f} MiB)")
        return {"gbps": rate(res, both, "GB/s", "wall"), "anon": res["anon"]}
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


def section_dask(args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    total = int(args.big_gib * 2**30)
    per = min(BIG_STAGE_BYTES, max(total // 2, 4096))
    n = args.dask_stages
    figures: dict[str, Any] = {}
    for name in ("big", "small"):
        d = os.path.join(workdir, "big-dask" if name == "big" else f"small-dask-{n}")
        os.makedirs(d, exist_ok=True)
        ref, cand = os.path.join(d, "ref.trace"), os.path.join(d, "cand.trace")
        try:
            if name == "big":
                header(f"dask: 2 traces x {args.big_gib:g} GiB in stages of {per / 2**20:.0f} MiB (float32), page cache "
                       "warm; single process vs a local cluster (processes, 1 thread each)")
                w = run_step("write_big", dir=d, bytes=total, stage_bytes=per)["write"]
                amount, unit = 2 * w["stages"] * per, "GB/s"
            else:
                header(f"dask: {n:,} stages x {ELEMS} float32; single process vs a local cluster")
                run_step("write_small", dir=d, stages=n, template=KEY_FAMILIES["residual"], diverge=int(n * 0.7))
                amount, unit = n, "st/s"
            _warm(ref, cand)
            runs = {k: run_step("diff_dask", ref=ref, cand=cand, workers=k) for k in (0, 1, 2)}
            single = runs[0]["diff"]
            row("compare_traces, single process", single, amount, unit)
            for k in (1, 2):
                r = runs[k]
                row(f"compare_traces, Dask {k} worker(s)", r["diff"], amount, unit,
                    note=f"cluster start {r['start']['wall']:.2f} s (not included)")
            same = all(runs[k]["diff"]["json"] == single["json"] for k in (1, 2))
            one, two = runs[1]["diff"]["wall"], runs[2]["diff"]["wall"]
            ratio(f"overhead: 1 worker takes {one / single['wall']:.2f}x the single-process wall time; speed-up: "
                  f"2 workers {single['wall'] / two:.2f}x vs single process, {one / two:.2f}x vs 1 worker "
                  f"({os.cpu_count()} CPUs shared by the client, the scheduler and the workers)")
            ratio(f"--json identical to the single-process diff on 1 and 2 workers: {same}")
            figures[name] = {"single": single["wall"], "one": one, "two": two, "same": same}
        finally:
            if not args.keep:
                shutil.rmtree(d, ignore_errors=True)
    return figures


SECTIONS: dict[str, Callable[[argparse.Namespace, str], dict[str, Any]]] = {
    "million": section_million,
    "big": section_big,
    "dask": section_dask,
}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sections", nargs="*", metavar="SECTION",
                    help=f"sections to run: {', '.join(SECTIONS)} (default: all)")
    ap.add_argument("--stages", default="1000000", help="stages per trace in `million`; a comma list runs each")
    ap.add_argument("--big-gib", type=float, default=2.0, help="GiB per trace in `big` (default 2)")
    ap.add_argument("--keys", choices=["both", *KEY_FAMILIES], default="both", help="key families diffed in `million`")
    ap.add_argument("--dask-stages", type=int, default=100_000, help="small stages per trace in `dask` (default 100000)")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds before a long step stops (default 30)")
    ap.add_argument("--report-json", action="store_true", help="also time TraceDiff.to_dict() + json.dumps")
    ap.add_argument("--quick", action="store_true", help="100,000 stages, 0.5 GiB, 5 s budget, 20,000 dask stages")
    ap.add_argument("--dir", default=None, help="where to write the traces (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated traces")
    args = ap.parse_args()
    if args.quick:
        args.stages, args.big_gib, args.budget, args.dask_stages = "100000", 0.5, 5.0, 20_000
    args.stages = [int(x) for x in str(args.stages).split(",")]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    workdir = args.dir or tempfile.mkdtemp(prefix="parity-scale-")
    os.makedirs(workdir, exist_ok=True)
    t0 = time.perf_counter()
    print(f"scale benchmark: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, numpy {np.__version__}")
    try:
        for name in args.sections or list(SECTIONS):
            SECTIONS[name](args, workdir)
    finally:
        if not args.keep:
            for name in os.listdir(workdir):  # only what the sections wrote (small-*, big)
                if name.startswith(("small-", "big")):
                    shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
            if not args.dir:
                shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
