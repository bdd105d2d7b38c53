"""Small torch models trained many-at-once: one masked, batched tensor program per chunk.

Data valuation retrains the same small model on tens of thousands of subsets of one
training set. (Coalitions much smaller than n are the exception to what follows: each
such model gets its own gathered rows X[S], so its cost follows |S|, not n; see
``models/training_rows.py``.) Fitting them one at a time spends nearly all the time in Python and in
tiny, badly shaped matrix products. Here every model of a chunk sees the *shared* design
matrix X (n, d); a subset S enters only through per-model point weights
``1[i in S] / |S|``. One chunk of b models is then a handful of large GEMMs per step,
e.g. for the logistic regression ``logits (b*K, n) = W (b*K, d+1) @ [X, 1]^T``.
Measured on one thread at n=500, d=10, K=2: ~18,000 logistic fits/s, ~430 MLP fits/s.

Training is full-batch Adam for a fixed number of steps from a fixed initialization,
with hand-written gradients under ``torch.no_grad`` (no autograd graph). Every model's
arithmetic involves only its own rows of each product, so v(S) is a deterministic
function of S; the tests check a mask gives the same accuracy alone or inside a chunk.

Objective of every model (sklearn's default ``C=1`` convention, divided by |S|)::

    (1/|S|) * sum_{i in S} CE(f(x_i), y_i)  +  l2 / (2|S|) * ||weights||^2

with l2 = 1 by default. Biases are not penalized. The 1/|S| scaling of the penalty is
deliberate: tiny subsets (often linearly separable) get a strong prior and converge in
~100 steps instead of drifting towards ever larger weights (a fixed 1e-3 left them 2-3
accuracy points from the optimum after 100 steps), and large subsets are barely
regularized. For the logistic model it is exactly scikit-learn's default multinomial
``LogisticRegression()`` (C = 1; for K = 2 the binary model with C = 2), the utility of
the paper's tabular experiments.

Class sets are fixed: every model has K outputs even when its subset misses a class,
so predictions are always over 0..K-1. This module never sets torch's thread count;
the caller pins it (one thread per worker is how it is meant to run).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from amortval.data.problem import Problem
from amortval.models.training_rows import GatheredRows, SharedRows, gather_indices, gathers, padded_rows

# Floats in the largest per-step activation of a chunk (b * width * n), ~1 MB, at most
# 512 models: larger chunks gained <10% on one thread and memory stays bounded.
_CHUNK_ELEMENTS = 1 << 18
_MAX_CHUNK = 512
_MIN_ROWS = 32
_GATHERED_ELEMENTS = 1 << 20


def _with_ones(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return torch.cat([t, torch.ones(t.shape[0], 1)], dim=1)


class _Adam:
    """In-place Adam on a list of tensors (one state per parameter, no autograd)."""

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps=1e-8):
        self.params = params
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[torch.Tensor]) -> None:
        self.t += 1
        step_size = self.lr / (1 - self.b1**self.t)
        bc2 = math.sqrt(1 - self.b2**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            p.addcdiv_(m, v.sqrt().div_(bc2).add_(self.eps), value=-step_size)


class _BatchedLearner:
    """Shared tensors, chunking and scoring; subclasses implement ``_fit_chunk``."""

    width: int  # activations per point and model (K, or the hidden width)
    gather = True  # fit small coalitions on their own rows (see fit_score)

    def __init__(self, problem: Problem, *, steps: int, lr: float, l2: float,
                 chunk_size: int | None):
        self.n_classes = int(problem.n_classes)
        self.x = _with_ones(problem.x_train)  # (n, d+1): last column is the bias input
        self.xt = self.x.T.contiguous()  # (d+1, n)
        self.xv_t = _with_ones(problem.x_valid).T.contiguous()  # (d+1, n_valid)
        y = torch.from_numpy(np.asarray(problem.y_train, dtype=np.int64))
        self.onehot_rows = torch.nn.functional.one_hot(y, self.n_classes).float()  # (n, K)
        self.shared_rows = SharedRows(self.xt, self.onehot_rows.T.contiguous().unsqueeze(0))
        self.y_valid = torch.from_numpy(np.asarray(problem.y_valid, dtype=np.int64))
        self.steps, self.lr, self.l2 = int(steps), float(lr), float(l2)
        self._chunk_size = chunk_size

    @property
    def chunk_size(self) -> int:
        """Models per chunk on the shared rows (per gathered bucket: ``_chunk_for``)."""
        if self._chunk_size is not None:
            return max(1, int(self._chunk_size))
        # Never fewer than the models a chunk is padded to (_score_shared): on a 990,000-row
        # table the memory bound alone gave chunks of 1, each padded to 32 models, so the
        # 25 point-removal refits of a logreg run fitted 800 models (567 s) instead of 32.
        fit = _CHUNK_ELEMENTS // (self.width * self.x.shape[0])
        return int(min(_MAX_CHUNK, max(fit, -(-_MIN_ROWS // self.width))))

    def _chunk_for(self, rows: int) -> int:
        """Models per chunk of gathered models of ``rows`` rows each: their own copies of
        X[S] dominate memory, ~4 MB a chunk (logreg, 1,000 rows: 64 models ran 1.5x
        faster than 256, which spill out of cache on every step)."""
        if self._chunk_size is not None:
            return max(1, int(self._chunk_size))
        per_model = (self.x.shape[1] + self.width) * rows
        return int(min(_MAX_CHUNK, max(1, _GATHERED_ELEMENTS // per_model)))

    def fit_score(self, masks: np.ndarray) -> np.ndarray:
        """Validation accuracy (float64, (B,)) of one model per mask row, chunk by chunk.

        A coalition much smaller than n is fitted on its own gathered rows, the others on
        the shared table (``models/training_rows.py``); which one depends only on |S| and
        n, and a gathered model is padded to a bucket of its own size, so v(S) does not
        depend on what else is in the call. ``gather = False`` forces the shared rows
        (the cost before gathering, for benchmarks).
        """
        masks = np.ascontiguousarray(masks, dtype=bool)
        out = np.empty(masks.shape[0], dtype=np.float64)
        sizes = masks.sum(axis=1)
        gathered = gathers(sizes, masks.shape[1]) if self.gather else np.zeros(len(masks), dtype=bool)
        with torch.no_grad():
            shared = np.flatnonzero(~gathered)
            step = self.chunk_size
            for start in range(0, len(shared), step):
                rows = shared[start:start + step]
                out[rows] = self._score_shared(masks[rows])
            bucket = np.array([padded_rows(s) for s in sizes[gathered]], dtype=np.int64)
            for rows_per_model in np.unique(bucket):
                models = np.flatnonzero(gathered)[bucket == rows_per_model]
                step = self._chunk_for(int(rows_per_model))
                for start in range(0, len(models), step):
                    chunk = models[start:start + step]
                    idx, real = gather_indices(masks[chunk], int(rows_per_model))
                    design = GatheredRows(self.x, self.onehot_rows, idx)
                    out[chunk] = self._score(design, real, len(chunk))
        return out

    def _score_shared(self, masks: np.ndarray) -> np.ndarray:
        m = torch.from_numpy(masks).float()
        b = m.shape[0]
        # MKL switches to other kernels (other summation order) for products with fewer
        # than ~12 model rows; padding small chunks with copies of their first mask keeps
        # every row's arithmetic, hence v(S), independent of what else is in the chunk.
        min_models = -(-_MIN_ROWS // self.width)
        if b < min_models:
            m = torch.cat([m, m[:1].expand(min_models - b, -1)])
        return self._score(self.shared_rows, m, b)

    def _score(self, design, member: torch.Tensor, b: int) -> np.ndarray:
        """Fit one model per row of ``member`` (b', rows) 0/1 on ``design``; score the first b."""
        count = member.sum(dim=1, keepdim=True).clamp_(min=1.0)
        logits = self._fit_chunk(design, member / count, 1.0 / count)  # (b', K, n_valid)
        # max(...).indices: the first maximal class, like argmax, but ~20x faster here.
        correct = logits[:b].max(dim=1).indices == self.y_valid
        return correct.double().mean(dim=1).numpy()

    def _fit_chunk(self, rows, weight: torch.Tensor, inv_count: torch.Tensor) -> torch.Tensor:
        """rows: SharedRows or GatheredRows; weight (b, rows) = 1[i in S]/|S|; inv_count
        (b, 1). Returns validation logits (b, K, n_valid)."""
        raise NotImplementedError

    def _penalty(self, inv_count: torch.Tensor, width: int) -> torch.Tensor:
        """L2 factor l2/|S| shaped like a first-layer weight (d+1, b*width); 0 for biases."""
        per_column = (self.l2 * inv_count).view(-1).repeat_interleave(width)
        pen = per_column.unsqueeze(0).expand(self.x.shape[1], -1).clone()
        pen[-1] = 0.0
        return pen


class BatchedLogisticRegression(_BatchedLearner):
    """Multinomial logistic regression (K outputs), zero-initialized, Adam, fixed steps.

    Defaults (Adam lr 0.1, 100 full-batch steps, l2 = 1) reach the exact optimum's
    validation accuracy to within 0.04-0.12 points on average (max 1 point on a 100-point
    validation set) across subset sizes 2..n, n up to 3,000, d up to 60, K up to 4.
    Zero initialization makes the result independent of any seed.
    """

    def __init__(self, problem: Problem, *, steps: int = 100, lr: float = 0.1,
                 l2: float = 1.0, chunk_size: int | None = None):
        super().__init__(problem, steps=steps, lr=lr, l2=l2, chunk_size=chunk_size)
        # K = 2: from zero init the two class columns stay exact negatives (the gradients
        # are, and Adam is odd in the gradient), so the softmax over (-w.x, w.x) is
        # sigmoid(2 w.x): one column is trained, the same iterates at half the cost.
        self.width = 1 if self.n_classes == 2 else self.n_classes

    def _fit_chunk(self, rows, weight: torch.Tensor, inv_count: torch.Tensor) -> torch.Tensor:
        b, n = weight.shape
        k = self.width
        # Column (model, class) of wt: that class's weights, bias last. Stored transposed
        # because the gradient x^T @ residual^T is ~3x faster than residual @ x (MKL).
        wt = torch.zeros(self.x.shape[1], b * k)
        pen = self._penalty(inv_count, k)
        point_weight = weight.unsqueeze(1)  # (b, 1, n)
        adam = _Adam([wt], self.lr)
        for _ in range(self.steps):
            z = rows.forward(wt, k)
            p = torch.sigmoid(z.mul_(2.0)) if k == 1 else torch.softmax(z, dim=1)
            residual = p.sub_(rows.onehot[:, -k:]).mul_(point_weight)  # dCE/dlogits, weighted
            adam.step([rows.backward(pen * wt, residual)])
        logits = (wt.T @ self.xv_t).view(b, k, -1)
        return torch.cat([-logits, logits], dim=1) if k == 1 else logits


class BatchedMLP(_BatchedLearner):
    """One hidden layer of ReLU units (default 32), Adam, fixed steps, shared init.

    Initialization is drawn once from ``torch.Generator().manual_seed(seed)`` (weights
    uniform in +-1/sqrt(fan_in) as in ``nn.Linear``, zero biases) and copied to every
    model, so v(S) depends only on S and the seed. Defaults: Adam lr 0.05, 100 steps,
    l2 = 1: within ~0.6 point of a 1,500-step run on subsets of < 30 points; on large
    subsets ~3 points per subset apart, without a systematic sign (not converged there;
    v measures this fixed procedure, which is what makes it cheap and deterministic).
    """

    def __init__(self, problem: Problem, seed: int, *, hidden: int = 32, steps: int = 100,
                 lr: float = 0.05, l2: float = 1.0, chunk_size: int | None = None):
        super().__init__(problem, steps=steps, lr=lr, l2=l2, chunk_size=chunk_size)
        self.hidden = int(hidden)
        self.width = self.hidden
        d, k = self.x.shape[1] - 1, self.n_classes
        gen = torch.Generator().manual_seed(int(seed))
        self.w1_init = torch.zeros(self.hidden, d + 1)
        self.w1_init[:, :d] = (torch.rand(self.hidden, d, generator=gen) * 2 - 1) / math.sqrt(d)
        self.w2_init = (torch.rand(k, self.hidden, generator=gen) * 2 - 1) / math.sqrt(self.hidden)

    def _fit_chunk(self, rows, weight: torch.Tensor, inv_count: torch.Tensor) -> torch.Tensor:
        b, n = weight.shape
        h, k = self.hidden, self.n_classes
        w1t = self.w1_init.T.repeat(1, b)  # (d+1, b*h): layout as in the logistic model
        w2 = self.w2_init.repeat(b, 1, 1)  # (b, k, h)
        b2 = torch.zeros(b, k, 1)
        pen1 = self._penalty(inv_count, h)
        pen2 = (self.l2 * inv_count).view(b, 1, 1)
        point_weight = weight.unsqueeze(1)
        adam = _Adam([w1t, w2, b2], self.lr)
        active = torch.empty(b, h, n)  # ReLU derivative, as floats: bool masks are slow
        for _ in range(self.steps):
            z1 = rows.forward(w1t, h)
            torch.gt(z1, 0.0, out=active)
            a = z1.clamp_min_(0.0)
            p = torch.softmax(torch.baddbmm(b2, w2, a), dim=1)
            g2 = p.sub_(rows.onehot).mul_(point_weight)  # (b, k, n)
            grad_w2 = torch.baddbmm(pen2 * w2, g2, a.transpose(1, 2))
            grad_b2 = g2.sum(dim=2, keepdim=True)
            g1 = torch.bmm(w2.transpose(1, 2), g2).mul_(active)  # (b, h, n)
            grad_w1 = rows.backward(pen1 * w1t, g1)
            adam.step([grad_w1, grad_w2, grad_b2])
        a_valid = torch.relu((w1t.T @ self.xv_t).view(b, h, -1))
        return torch.baddbmm(b2, w2, a_valid)
