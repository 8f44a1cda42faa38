"""One implementation of one workload in its own process, driven by JSON lines on stdin.

Usage (by the runner): python -m benchmarks.worker W2 torch '{"...": ...}'
Commands: {"cmd": "run", "n": N} -> {"seconds": s}; {"cmd": "loss"}; {"cmd": "accuracy", "epochs": E};
{"cmd": "exit"} -> peak memory, library versions and thread settings.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
import traceback


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in ("numpy", "torch", "sklearn", "chainrule"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def _threads() -> dict:
    info: dict = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    if "torch" in sys.modules:
        info["torch.get_num_threads"] = sys.modules["torch"].get_num_threads()
    try:
        from threadpoolctl import threadpool_info

        info["threadpoolctl"] = [
            {k: p.get(k) for k in ("user_api", "internal_api", "num_threads", "version", "architecture")}
            for p in threadpool_info()
        ]
    except ImportError:
        info["threadpoolctl"] = "not installed"
    return info


def main() -> None:
    workload, impl, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol

    def reply(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")

    from . import WORKLOADS

    mod = importlib.import_module(WORKLOADS[workload])
    try:
        bench = mod.make(impl, cfg)
    except Exception as e:
        if type(e).__name__ == "Unavailable":
            reply({"unavailable": str(e)})
        elif isinstance(e, ImportError):
            reply({"unavailable": f"{e} (pip install torch scikit-learn mnist1d for every peer)"})
        else:
            reply({"error": traceback.format_exc()})
        return
    reply({"ready": True})
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "run":
                c0, t0 = time.process_time(), time.perf_counter()
                bench.run(msg["n"])
                reply({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0})
            elif msg["cmd"] == "loss":
                values = bench.values() if hasattr(bench, "values") else []
                reply({"loss": bench.loss(), "values": [float(v) for v in values]})
            elif msg["cmd"] == "accuracy":
                reply({"accuracy": bench.accuracy(msg["epochs"])})
            elif msg["cmd"] == "exit":
                maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                reply({"maxrss_mb": maxrss_kb / 1024, "versions": _versions(), "threads": _threads()})
                return
        except Exception:
            reply({"error": traceback.format_exc()})
            return


if __name__ == "__main__":
    main()
