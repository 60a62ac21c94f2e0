"""Run ``blocklist-sync ARGS`` in this process, then write its own peak resident memory (KiB).

    python tests/peak_memory.py OUT_FILE ARGS...

For the memory tests and the benchmark. The parent cannot measure this from outside: Linux
carries into a process's ``ru_maxrss`` the peak of the address space it had *before* ``exec``
(the forking parent's), so ``wait4`` and ``RUSAGE_SELF`` both report a pytest worker's 400 MB
for a CLI that used 60, and ``RUSAGE_CHILDREN`` is the largest of every child ever reaped (an
earlier ``pip install``). ``VmHWM`` in ``/proc/self/status`` is the high-water mark of this
process's own address space, from interpreter start to exit: the CLI's peak, whatever ran
before it. Linux only, like the suite.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmHWM line: the memory tests need Linux")


def main() -> None:
    out = Path(sys.argv.pop(1))
    try:
        runpy.run_module("sync", run_name="__main__", alter_sys=True)
    finally:  # also on SystemExit, which carries the CLI's exit code on after this
        out.write_text(str(peak_kib()))


if __name__ == "__main__":
    main()
