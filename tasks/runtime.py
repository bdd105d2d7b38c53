"""Process-wide settings for valuation workers.

One BLAS/torch thread per fit: parallelism comes from workers. On 2 cores a fit with
contended BLAS threads measured 40 ms against 2 ms single-threaded (DESIGN.md, Speed).
"""

from __future__ import annotations

import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads() -> None:
    """Pin intra-op threads to one. Environment variables only affect libraries loaded
    after this call, so the CLI also sets them before importing numpy or torch."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    import torch

    torch.set_num_threads(1)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
