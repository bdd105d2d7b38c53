"""Process-wide settings and measures of valuation workers.

One BLAS/torch thread per fit: parallelism comes from workers. On 2 cores a fit with
contended BLAS threads measured 40 ms against 2 ms single-threaded (DESIGN.md, Speed).
Peak memory is read per process, so the flow can ask each Dask worker for its own.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads() -> None:
    """Pin intra-op threads to one. Environment variables only affect libraries loaded
    after this call, so the CLI also sets them before importing numpy or torch."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    import torch

    torch.set_num_threads(1)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB, since it started (a Dask worker's whole life).

    /proc's VmHWM starts afresh at exec; ``ru_maxrss`` would also count memory a forked
    child inherited from its parent, and is in bytes on macOS, kilobytes elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
