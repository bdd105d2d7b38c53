"""Named random streams: every random draw of a run comes from (run seed, purpose, index).

One ``numpy.random.SeedSequence`` per purpose, keyed by ``spawn_key = (purpose id,
*index)``: two purposes never share a stream, and an index (a unit of Monte Carlo work,
a fold) gives each piece of work its own stream, so results depend neither on how the
work is grouped into batches nor on worker count or order. A purpose's id is fixed
forever once released: changing one changes every result drawn from it.

Purposes:
- ``units``: one stream per unit of Monte Carlo work (a permutation chain, a shared
  subset, one independent coalition), indexed by the unit number. A larger budget is
  more units, so it extends a run instead of redrawing it.
- ``split``: the validation rows split off the input table.
- ``points``: which rows get Monte Carlo samples when only some are sampled.
- ``learner``: the utility learner's fixed initialization / seed (v(S) depends only on S).
- ``network``: indexed by fold, that fold network's initialization and classifier
  pretraining (reused across a run's rounds); by (fold, rate), its regression shuffling
  at the rate-th learning rate tried.
- ``point_folds``: the cross-fitting folds of points when each point has one draw.
- ``probes``: probe rows of a ground truth (benchmarks).
- ``draw_permutations``: the permutation of draw j shared by all blocks of that draw in
  the distributional sampler (indexed by j); each block's own draws stay on ``units``.
"""

from __future__ import annotations

import numpy as np

STREAMS: dict[str, int] = {
    "units": 1,
    "split": 2,
    "points": 3,
    "learner": 4,
    "network": 5,
    "point_folds": 6,
    "probes": 7,
    "draw_permutations": 8,
}


def seed_sequence(seed: int, purpose: str, *index: int) -> np.random.SeedSequence:
    """The SeedSequence of ``purpose`` (and ``index``) under the run seed."""
    try:
        key = STREAMS[purpose]
    except KeyError:
        raise ValueError(f"unknown random stream {purpose!r}; known: {', '.join(STREAMS)}") from None
    return np.random.SeedSequence(int(seed), spawn_key=(key, *(int(i) for i in index)))


def stream(seed: int, purpose: str, *index: int) -> np.random.Generator:
    """A numpy Generator on the named stream."""
    return np.random.default_rng(seed_sequence(seed, purpose, *index))


def int_seed(seed: int, purpose: str, *index: int) -> int:
    """A 63-bit integer seed from the named stream, for libraries that take one
    (``torch.Generator.manual_seed``, XGBoost's ``seed``)."""
    return int(seed_sequence(seed, purpose, *index).generate_state(1, np.uint64)[0] >> np.uint64(1))


def torch_generator(seed: int, purpose: str, *index: int):
    """A ``torch.Generator`` seeded from the named stream."""
    import torch

    return torch.Generator().manual_seed(int_seed(seed, purpose, *index))
