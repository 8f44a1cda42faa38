"""Runner: every workload for chainrule and its peers, each implementation in its own process.

    PYTHONPATH=src python -m benchmarks [--workloads W1,W2] [--repeats N] [--epochs E] [--json OUT]

Per workload: one worker process per implementation (BLAS threads of one library would slow
another's on 2 cores), one discarded warm-up repeat, then `--repeats` timed repeats interleaved
across the implementations (the order rotates each repeat); medians are reported. After the timed
repeats every implementation has done the same steps from the same weights and data, so their
losses must agree (a mismatch fails the run, exit status 1). W3/W5 then train on to `--epochs`
epochs and report test accuracy.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import WORKLOADS
from .common import THREADS

# Pause before each timed run: after its last call, a worker's BLAS/OpenMP threads keep spinning for ~0.1 s
# (OpenBLAS's thread timeout), which on 2 cores takes a core from the next worker's run and stalls its own
# 2-thread products (W2 at 2 threads: each implementation up to 2x slower, chainrule, mostly run right after
# numpy, most). With the pause each run starts on an otherwise idle machine, as it would run alone.
SETTLE_S = 0.25

ROOT = Path(__file__).resolve().parent.parent


class Worker:
    def __init__(self, workload: str, impl: str, cfg: dict, threads: int = THREADS) -> None:
        env = dict(os.environ)
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CHAINRULE_BENCH_THREADS"):
            env[k] = str(threads)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
        self.impl = impl
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", workload, impl, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.status = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            return {"error": f"worker {self.impl} exited with status {self.proc.returncode} (see stderr)"}
        return json.loads(line)

    def ask(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if "error" in out:
            raise RuntimeError(f"{self.impl}: {out['error']}")
        return out

    def close(self) -> dict:
        try:
            return self.ask(cmd="exit")
        finally:
            self.proc.stdin.close()
            self.proc.wait()


def run_workload(name: str, repeats: int = 5, steps: int | None = None, epochs: int | None = None,
                 impls: list[str] | None = None, log=print, threads: int = THREADS) -> dict:  # fmt: skip
    """Run one workload; returns {"workload", "rows": [...], "ok": bool, ...}."""
    mod = importlib.import_module(WORKLOADS[name])
    if hasattr(mod, "prepare"):
        try:
            mod.prepare()
        except ImportError as e:
            raise SystemExit(f"{name} needs its dataset package: {e} (pip install mnist1d scikit-learn)") from None
    steps = steps or mod.STEPS
    acc_epochs = getattr(mod, "ACC_EPOCHS", None)
    if acc_epochs is not None and epochs is not None and epochs >= 0:  # -1: the WORKLOADS.md figure
        acc_epochs = epochs
    names = [i for i in mod.IMPLS if impls is None or i in impls]
    workers: dict[str, Worker] = {}
    rows = {i: {"impl": i} for i in names}
    try:
        for impl in names:
            w = Worker(name, impl, {"steps": steps}, threads)
            if "unavailable" in w.status:
                rows[impl]["unavailable"] = w.status["unavailable"]
                w.proc.stdin.close()
                w.proc.wait()
            elif "error" in w.status:
                raise RuntimeError(f"{name} {impl} failed to start:\n{w.status['error']}")
            else:
                workers[impl] = w
        live = list(workers)
        for impl in live:  # warm-up, discarded
            workers[impl].ask(cmd="run", n=steps)
        times: dict[str, list[float]] = {i: [] for i in live}
        cpu: dict[str, list[float]] = {i: [] for i in live}
        for r in range(repeats):
            order = live[r % len(live) :] + live[: r % len(live)] if live else []
            for impl in order:
                if threads > 1:
                    time.sleep(SETTLE_S)
                    # the pause leaves this process's caches and the core's clock cold: a short unit (W5: 2
                    # epochs, 4 ms) then runs ~30% slower. Every implementation gets the same untimed units,
                    # so the trajectories (and the loss check) stay identical.
                    workers[impl].ask(cmd="run", n=steps)
                out = workers[impl].ask(cmd="run", n=steps)
                times[impl].append(out["seconds"] / steps)
                cpu[impl].append(out["cpu_seconds"] / steps)
        for impl in live:
            rows[impl]["times"] = times[impl]
            rows[impl]["median_s"] = statistics.median(times[impl]) if times[impl] else None
            rows[impl]["cpu_times"] = cpu[impl]
            rows[impl]["median_cpu_s"] = statistics.median(cpu[impl]) if cpu[impl] else None
            rows[impl].update(workers[impl].ask(cmd="loss"))
        if acc_epochs:
            for impl in live:
                rows[impl]["accuracy"] = workers[impl].ask(cmd="accuracy", epochs=acc_epochs)["accuracy"]
        for impl in live:
            info = workers[impl].close()
            rows[impl].update(info)
            del workers[impl]
    finally:
        for w in workers.values():
            w.proc.kill()
    # correctness: every loss against the reference (chainrule, or the first peer that ran)
    ok = True
    ref_impl = next((i for i in names if "loss" in rows[i]), None)
    ref = rows[ref_impl]["loss"] if ref_impl else None
    base = rows.get("chainrule", {}).get("median_s")
    for impl in names:
        row = rows[impl]
        if "loss" not in row:
            row["check"] = "unavailable"
            continue
        err = abs(row["loss"] - ref) / max(abs(ref), 1e-12)
        for v, r in zip(row.get("values", ()), rows[ref_impl].get("values", ())):  # e.g. W1's weights
            err = max(err, abs(v - r) / max(abs(r), 1e-12))
        row["loss_rel_err"] = err
        row["check"] = "ok" if err <= mod.RTOL else f"MISMATCH (rel err {err:.1e} > {mod.RTOL:.0e})"
        ok &= err <= mod.RTOL
        if base and impl != "chainrule":
            row["ratio"] = row["median_s"] / base
    result = {"workload": name, "title": mod.TITLE, "unit": mod.UNIT, "steps_per_repeat": steps,
              "repeats": repeats, "accuracy_epochs": acc_epochs, "reference": ref_impl, "ok": ok,
              "rows": [rows[i] for i in names]}  # fmt: skip
    log(format_table([result]))
    return result


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def format_table(results: list[dict]) -> str:
    lines = [
        "| workload | implementation | median per unit | peer / chainrule | CPU time per unit | peak RSS | "
        "loss after timed steps | test acc. | check |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for row in res["rows"]:
            if "unavailable" in row:
                lines.append(f"| {res['workload']} | {row['impl']} | unavailable: {row['unavailable']} | | | | | | |")
                continue
            ratio = f"{row['ratio']:.2f}×" if "ratio" in row else ("1 (ref)" if row["impl"] == "chainrule" else "-")
            acc = f"{row['accuracy'] * 100:.1f}% ({res['accuracy_epochs']} ep.)" if "accuracy" in row else "-"
            lines.append(
                f"| {res['workload']} | {row['impl']} | {_fmt_time(row.get('median_s'))}/{res['unit']} | {ratio} | "
                f"{_fmt_time(row.get('median_cpu_s'))} | {row.get('maxrss_mb', 0):.0f} MB | "
                f"{row.get('loss', float('nan')):.6g} | {acc} | "
                f"{row.get('check', '')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated ids (default: all)")
    p.add_argument("--impls", default=None, help="comma-separated implementations to run (default: all)")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per implementation (default 7)")
    p.add_argument("--steps", type=int, default=None, help="units per repeat (default: per workload)")
    p.add_argument(
        "--epochs", type=int, default=20,
        help="W3/W5: epochs after which test accuracy is measured (default 20, for speed; -1 uses WORKLOADS.md's "
        "100 for W3 and 200 for W5; 0 skips)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=THREADS, help=f"BLAS and torch threads (default {THREADS})")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    names = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    impls = args.impls.split(",") if args.impls else None
    started = datetime.datetime.now(datetime.timezone.utc)
    results = []
    for name in names:
        print(f"## {name}", flush=True)
        results.append(run_workload(name, args.repeats, args.steps, args.epochs, impls, threads=args.threads))
    print()
    cmd = " ".join(sys.argv[1:] if argv is None else argv)
    load = os.getloadavg()[0]
    print(f"date (UTC): {started:%Y-%m-%d %H:%M}; threads: {args.threads} (OMP/OPENBLAS/MKL_NUM_THREADS, "
          f"torch.set_num_threads); load average {load:.1f}; command: python -m benchmarks {cmd}")  # fmt: skip
    print(format_table(results))
    ok = all(r["ok"] for r in results)
    if args.json:
        doc = {"date": started.isoformat(), "argv": sys.argv if argv is None else argv, "cpu_count": os.cpu_count(),
               "load_average": os.getloadavg(), "threads": args.threads, "results": results}  # fmt: skip
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
    if not ok:
        print("FAILED: some implementation reached a different loss (see the check column)", file=sys.stderr)
        return 1
    return 0
