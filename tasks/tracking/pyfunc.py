"""The registered model's pyfunc flavour: raw rows (features + label) -> column ``value``.

Logged as code (``MODEL_CODE``), never pickled: the network and encoder live in the
artifact directory written by ``ValuationModel.save`` and are loaded in
``load_context``. Loading needs ``amortval`` importable.

Served with ``mlflow models serve``, a column the signature lacks or mistypes is refused
by MLflow's own schema check (a 400 naming the column); amortval's checks run next (an
unknown label, a null, a value too far out to encode). Those raise ``AmortvalError``,
which MLflow's scoring server would turn into a generic BAD_REQUEST with the reason only
in ``stack_trace``; ``predict`` re-raises them as ``MlflowException`` so the reason is the
response's ``message``: 400 for bad rows, 500 for a broken model.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, Schema

from amortval.errors import AmortvalError, DataValidationError
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
        try:
            values = np.asarray(self.model.predict(frame), dtype=np.float64)
        except DataValidationError as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
        except AmortvalError as error:
            raise MlflowException(str(error), error_code=INTERNAL_ERROR) from error
        return pd.DataFrame({"value": values}, index=frame.index)


def model_signature(model: ValuationModel) -> ModelSignature:
    """Inputs: the raw columns with the encoder's types; output: ``value`` (double)."""
    inputs = Schema([ColSpec(kind, column) for column, kind in model.encoder.input_schema()])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "value")]))
