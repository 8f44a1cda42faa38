"""chainrule keeps freed array memory for reuse (glibc's mallopt), unless CHAINRULE_KEEP_FREED_MEMORY=0."""

import os
import subprocess
import sys

import chainrule._memory as memory

_PROBE = """
import resource
import numpy as np
import chainrule  # noqa: F401
def step():  # three live 8 MB arrays, then all freed, as in a training step
    arrays = [np.ones(1 << 21, np.float32) for _ in range(3)]
    del arrays
for _ in range(3):
    step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _faults(env_value: str) -> int:
    env = {**os.environ, "CHAINRULE_KEEP_FREED_MEMORY": env_value}
    src = os.path.join(os.path.dirname(memory.__file__), "..")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_keep_freed_memory_applies_on_glibc() -> None:
    assert memory.keep_freed_memory() is sys.platform.startswith("linux")


def test_freed_arrays_are_reused_without_page_faults_and_env_opts_out() -> None:
    kept, returned = _faults("1"), _faults("0")
    assert kept < 300  # 20 x 24 MB reused from the heap
    assert returned > 5000  # glibc's default gives (part of) the heap top back at every step
