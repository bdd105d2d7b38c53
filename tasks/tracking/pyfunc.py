"""The registered model's pyfunc flavour: raw rows (features + label) -> column ``value``.

Logged as code (``MODEL_CODE``), never pickled: the network and encoder live in the
artifact directory written by ``ValuationModel.save`` and are loaded in
``load_context``. Loading needs ``amortval`` importable.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from amortval.models.valuation_model import ValuationModel

MODEL_ARTIFACT = "valuation_model"
PIP_REQUIREMENTS = ["torch==2.13.*", "polars", "pyarrow", "pandas", "numpy"]

MODEL_CODE = """\
from mlflow.models import set_model

from amortval.tasks.tracking.pyfunc import ValuationPyfunc

set_model(ValuationPyfunc())
"""


class ValuationPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc adapter over ``ValuationModel``; see the module docstring."""

    def __init__(self) -> None:
        self.model: ValuationModel | None = None

    def load_context(self, context: Any) -> None:
        self.model = ValuationModel.load(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.model is None:
            raise RuntimeError("ValuationPyfunc used before load_context")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        values = np.asarray(self.model.predict(frame), dtype=np.float64)
        return pd.DataFrame({"value": values}, index=frame.index)


def model_signature(model: ValuationModel) -> ModelSignature:
    """Inputs: the raw columns with the encoder's types; output: ``value`` (double)."""
    inputs = Schema([ColSpec(kind, column) for column, kind in model.encoder.input_schema()])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "value")]))
