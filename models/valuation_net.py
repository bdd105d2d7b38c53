"""The valuation network f(x, y): an MLP with one output per class, read at the label.

Covert et al. (2024) predict a point's value from its features *and* its label with a
classifier-shaped network: the same trunk first learns the task as a classifier (its
logits), then the last layer is zeroed and the whole network regresses the noisy value
samples. Reading the output at the point's own label lets a flipped label change the
predicted value, which is what mislabeled-point detection relies on.

Initialization draws only from an explicit ``torch.Generator`` (layers are built with
``skip_init`` so the global RNG is never touched): the same seed gives bit-identical
weights on CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """torch's default Linear init (uniform, bound 1/sqrt(fan_in)), from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)


class ValuationNet(nn.Module):
    """``layers`` x ``hidden`` ReLU MLP with a linear head of ``n_classes`` outputs.

    ``forward`` gives logits while pretraining and *scaled* values afterwards (the caller
    multiplies by its target scale); ``value`` reads the output at each point's label.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        hidden: int = 128,
        layers: int = 3,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if n_features < 1 or n_classes < 1 or hidden < 1 or layers < 1:
            raise ValueError(
                f"ValuationNet needs positive sizes, got n_features={n_features}, "
                f"n_classes={n_classes}, hidden={hidden}, layers={layers}"
            )
        self.n_features = int(n_features)
        self.n_classes = int(n_classes)
        self.hidden = int(hidden)
        self.layers = int(layers)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        trunk: list[nn.Module] = []
        width = self.n_features
        for _ in range(self.layers):
            linear = skip_init(nn.Linear, width, self.hidden)
            _init_linear(linear, generator)
            trunk += [linear, nn.ReLU()]
            width = self.hidden
        self.trunk = nn.Sequential(*trunk)
        self.head = skip_init(nn.Linear, width, self.n_classes)
        _init_linear(self.head, generator)

    def forward(self, x: Tensor) -> Tensor:
        """(B, n_features) float -> (B, n_classes)."""
        return self.head(self.trunk(x))

    def value(self, x: Tensor, y: Tensor) -> Tensor:
        """(B,) output at each row's class index ``y`` (int64)."""
        out = self.forward(x)
        return out.gather(1, y.long().reshape(-1, 1)).squeeze(1)

    def zero_head(self) -> None:
        """Zero the last layer: regression starts from f = 0 with the pretrained trunk.

        A zero start is the natural prior for values (most points have small ones) and
        keeps classifier logits, which are on an unrelated scale, out of the first epochs.
        """
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()

    def architecture(self) -> dict[str, int]:
        """The constructor arguments, to rebuild the module before loading a state dict."""
        return {
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "hidden": self.hidden,
            "layers": self.layers,
        }


class ValuationEnsemble(nn.Module):
    """The mean of several ``ValuationNet`` of one architecture (the cross-fitted folds).

    Same interface as a single network (``forward``, ``value``, ``architecture``), so the
    valuation model, MLflow wrapper and scoring do not care how many members there are.
    """

    def __init__(self, members: list[ValuationNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one network")
        shapes = {tuple(m.architecture().items()) for m in members}
        if len(shapes) != 1:
            raise ValueError(f"ensemble members differ in architecture: {sorted(shapes)}")
        self.members = nn.ModuleList(members)
        first = members[0]
        self.n_features, self.n_classes = first.n_features, first.n_classes

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)

    def value(self, x: Tensor, y: Tensor) -> Tensor:
        out = self.forward(x)
        return out.gather(1, y.long().reshape(-1, 1)).squeeze(1)

    def architecture(self) -> dict[str, int]:
        return {**self.members[0].architecture(), "members": len(self.members)}

    @classmethod
    def from_architecture(cls, members: int = 1, **architecture: int) -> "ValuationEnsemble":
        """Empty members of the given architecture, to load a state dict into."""
        return cls([ValuationNet(**architecture) for _ in range(members)])
