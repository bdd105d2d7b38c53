"""The deployable valuation model: raw rows (features and label) -> values.

It bundles the three things scoring needs and nothing else: the encoder fitted on the
training rows (so new rows are encoded exactly as the training rows were, and a table
with another schema is refused instead of mis-encoded), the valuation network, and the
target scale its outputs are multiplied by. MLflow wraps it elsewhere
(``tasks/tracking.py``); this file knows only plain files, so scoring works without a
tracking server.

On disk (``save``/``load``): ``valuation_net.pt`` (state dict), ``encoder.json``
(``TabularEncoder.to_dict``) and ``valuation_model.json`` (architecture, target scale,
format version).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import torch

from amortval.data.encoding import TabularEncoder
from amortval.errors import AmortvalError
from amortval.models.valuation_net import ValuationEnsemble

MODEL_FORMAT = 2  # 2: the network is an ensemble of cross-fitted members
WEIGHTS_FILE = "valuation_net.pt"
ENCODER_FILE = "encoder.json"
META_FILE = "valuation_model.json"
_CHUNK = 65536


class ValuationModel:
    """Encoder + network + target scale. ``predict`` returns float64 values, original units."""

    def __init__(self, encoder: TabularEncoder, net: ValuationEnsemble, target_scale: float) -> None:
        if net.n_features != encoder.n_encoded or net.n_classes != encoder.n_classes:
            raise ValueError(
                f"network shape ({net.n_features} features, {net.n_classes} classes) does not "
                f"match the encoder ({encoder.n_encoded} encoded columns, {encoder.n_classes} classes)"
            )
        self.encoder = encoder
        self.net = net
        self.target_scale = float(target_scale)
        self.net.eval()

    def predict(self, frame: pl.DataFrame | pd.DataFrame, *, ignore: Sequence[str] = ()) -> np.ndarray:
        """Value of every row (features and label), float64 (rows,).

        The frame is validated against the training schema first: a missing, extra (not in
        ``ignore``) or retyped column, a null/NaN/inf value or an unknown label raises
        ``SchemaMismatchError`` naming the column, and so does a value too far out to encode
        (``encoding.py``). pandas frames are converted with ``pl.from_pandas``. A
        non-finite output raises ``AmortvalError`` instead of being returned: a NaN value
        would sort anywhere and silently decide which rows a curation keeps.
        """
        if isinstance(frame, pd.DataFrame):
            frame = pl.from_pandas(frame)
        frame = self.encoder.validate_scoring_frame(frame, require_target=True, ignore=ignore)
        x = torch.from_numpy(self.encoder.transform(frame))
        y = torch.from_numpy(self.encoder.labels(frame))
        out = np.empty(x.shape[0], dtype=np.float64)
        self.net.eval()
        with torch.no_grad():
            for start in range(0, x.shape[0], _CHUNK):
                stop = start + _CHUNK
                out[start:stop] = self.net.value(x[start:stop], y[start:stop]).double().numpy()
        out *= self.target_scale
        bad = np.flatnonzero(~np.isfinite(out))
        if bad.size:
            raise AmortvalError(
                f"the valuation network returned {len(bad)} non-finite values (first at row {bad[0]}: "
                f"{out[bad[0]]}) for finite inputs; the model is broken, retrain it"
            )
        return out

    def save(self, directory: str | Path) -> Path:
        """Write weights, encoder and metadata into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), directory / WEIGHTS_FILE)
        (directory / ENCODER_FILE).write_text(json.dumps(self.encoder.to_dict(), indent=1))
        meta = {
            "format": MODEL_FORMAT,
            "architecture": self.net.architecture(),
            "target_scale": self.target_scale,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ValuationModel:
        """Rebuild a model written by ``save``; predictions are identical to the saved one's."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format") != MODEL_FORMAT:
            raise ValueError(f"unsupported valuation model format {meta.get('format')!r} in {directory}")
        encoder = TabularEncoder.from_dict(json.loads((directory / ENCODER_FILE).read_text()))
        net = ValuationEnsemble.from_architecture(**meta["architecture"])
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        return cls(encoder, net, float(meta["target_scale"]))
