"""The training rows a chunk of batched torch models sees: all n shared, or each its own.

``models/torch_learners.py`` trains b models at once. A model touches the training rows
only through two products per step, and both are here:

- ``forward(wt, width)``: pre-activations (b, width, rows) of each model's first layer, from
  first-layer weights laid out as columns (d+1, b*width);
- ``backward(base, g)``: ``base`` + the first-layer gradient x^T g, same layout, from
  per-row output gradients g (b, width, rows), already weighted by 1[i in S] / |S|.

``SharedRows`` multiplies every model by the whole table X (n, d+1): one large GEMM,
the fastest when coalitions are a good share of n, but a fit costs O(n) rows whatever
|S|. ``GatheredRows`` gives each model its own rows X[S] (b, d+1, m), padded to m rows
with row 0 at weight 0 (its gradient is exactly 0), so a fit costs O(|S|) rows: a
1,000-row coalition of a 100,000-row table costs what it costs in a 1,000-row table.
Products are then batched per model (``bmm``); the learner chooses per coalition size
(``gathers``) and pads m to a bucket of the size (``padded_rows``), never to the chunk's
largest coalition, so a model's arithmetic is the same alone or inside any chunk.
"""

from __future__ import annotations

import numpy as np
import torch

# Gather a model's rows when |S| < n / 4: below that the per-model products (batched,
# m rows) beat one shared GEMM over all n rows (benchmarks/fit_speed.py).
GATHER_BELOW = 0.25
_MIN_BUCKET = 32


def gathers(sizes: np.ndarray, n: int) -> np.ndarray:
    """Which coalitions (by size) are fitted on their own gathered rows."""
    return np.asarray(sizes) < GATHER_BELOW * n


def padded_rows(size: int) -> int:
    """Rows of a gathered model of |S| = size: size rounded up to 1/8 of its power of two
    (at most 12.5% padding) and to at least 32, so few distinct shapes occur."""
    size = max(int(size), 1)
    step = max(_MIN_BUCKET, 1 << max(0, size.bit_length() - 4))
    return -(-size // step) * step


class SharedRows:
    """Every model sees all n rows; a model's coalition is only its row weights."""

    def __init__(self, xt: torch.Tensor, onehot: torch.Tensor):
        self.xt = xt  # (d+1, n)
        self.onehot = onehot  # (K, n): broadcasts over models
        self.rows = xt.shape[1]

    def forward(self, wt: torch.Tensor, width: int) -> torch.Tensor:
        return (wt.T @ self.xt).view(-1, width, self.rows)

    def backward(self, base: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b, width, rows = g.shape
        return torch.addmm(base, self.xt, g.view(b * width, rows).T)


class GatheredRows:
    """Model j sees rows idx[j] (padded); its weights are 0 on padding rows."""

    def __init__(self, x: torch.Tensor, onehot_rows: torch.Tensor, idx: torch.Tensor):
        # Contiguous (b, d+1, m): both products read it as is; a transposed view made
        # the gradient bmm ~7x slower (it is copied on every call).
        self.xg_t = x[idx].transpose(1, 2).contiguous()
        self.onehot = onehot_rows[idx].transpose(1, 2)  # (b, K, m)
        self.rows = idx.shape[1]

    def forward(self, wt: torch.Tensor, width: int) -> torch.Tensor:
        b = self.xg_t.shape[0]
        return torch.bmm(wt.T.reshape(b, width, wt.shape[0]), self.xg_t)

    def backward(self, base: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b, width, _ = g.shape
        grad = torch.bmm(self.xg_t, g.transpose(1, 2))  # (b, d+1, width)
        return base + grad.permute(1, 0, 2).reshape(base.shape[0], b * width)


def gather_indices(masks: np.ndarray, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (b, rows) of each mask's points in ascending order, padded with row 0,
    and the float 0/1 indicator (b, rows) of the real ones."""
    b = masks.shape[0]
    model, col = np.nonzero(masks)
    counts = np.bincount(model, minlength=b)
    pos = np.arange(len(col)) - np.repeat(np.cumsum(counts) - counts, counts)
    idx = np.zeros((b, rows), dtype=np.int64)
    idx[model, pos] = col
    real = np.zeros((b, rows), dtype=np.float32)
    real[model, pos] = 1.0
    return torch.from_numpy(idx), torch.from_numpy(real)
