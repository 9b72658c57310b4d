"""The registered adapter model, as MLflow *models from code*.

``raypost promote`` logs this file (not a pickled object) as the pyfunc model's code, with the
adapter folder as its ``adapter`` artifact. ``mlflow.pyfunc.load_model("models:/NAME@champion")``
runs this file and calls ``load_context``: loading never unpickles anything, and an adapter
folder never chooses what is imported (its method must be a registered one).
"""

from __future__ import annotations

import mlflow
import mlflow.pyfunc


class AdapterModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from raypost.inference import load_predictor

        self.predictor = load_predictor(context.artifacts["adapter"])

    def predict(self, context, model_input, params=None):
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        return self.predictor.predict(rows)


mlflow.models.set_model(AdapterModel())
