"""MLflow model directories written by hand, as MLflow 2.x writes them, without MLflow.

``mlmodel`` returns the MLmodel document ``mlflow.sklearn.log_model`` writes (a test changes
it before writing); ``write_model_dir`` writes it with ``yaml.safe_dump`` (MLflow's own
call), the pickle, ``requirements.txt``, ``conda.yaml``, ``python_env.yaml`` and an input
example.
"""

from __future__ import annotations

import json
import pickle
import platform
from pathlib import Path
from typing import Any

import pandas as pd
import sklearn
import yaml

RUN_ID = "5e0b3c8f2a6d4e1b9c7a0f3d2e1c4b5a"
MODEL_UUID = "9f1c2d3e4b5a46978877665544332211"
REQUIREMENTS = ["mlflow==2.14.1", "cloudpickle==3.0.0", f"scikit-learn=={sklearn.__version__}"]


def column_signature(frame: pd.DataFrame) -> dict[str, Any]:
    """Return MLflow's column-based signature block for ``frame`` and integer labels."""
    inputs = [{"type": "double", "name": str(name), "required": True} for name in frame.columns]
    return {"inputs": json.dumps(inputs), "outputs": json.dumps([{"type": "long",
                                                                 "required": True}]),
            "params": None}


def mlmodel(signature: dict[str, Any] | None, *, pickled: str = "model.pkl",
            sklearn_version: str = sklearn.__version__) -> dict[str, Any]:
    """Return the MLmodel document of an ``mlflow.sklearn.log_model(model, "model")``."""
    document: dict[str, Any] = {
        "artifact_path": "model",
        "flavors": {
            "python_function": {
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": "mlflow.sklearn", "model_path": pickled,
                "predict_fn": "predict", "python_version": platform.python_version()},
            "sklearn": {"code": None, "pickled_model": pickled,
                        "serialization_format": "cloudpickle",
                        "sklearn_version": sklearn_version},
        },
        "mlflow_version": "2.14.1",
        "model_size_bytes": 1234,
        "model_uuid": MODEL_UUID,
        "run_id": RUN_ID,
        "saved_input_example_info": {"artifact_path": "input_example.json",
                                     "pandas_orient": "split", "type": "dataframe"},
        "utc_time_created": "2024-05-02 09:13:27.412345",
    }
    if signature is not None:
        document["signature"] = signature
    return document


def write_model_dir(directory: Path, model: Any, document: dict[str, Any] | str,
                    example: pd.DataFrame | None = None) -> Path:
    """Write an MLflow model directory holding ``model`` pickled and the MLmodel ``document``.

    A text ``document`` is written as it is (to write broken YAML).
    """
    directory.mkdir(parents=True)
    with (directory / "model.pkl").open("wb") as handle:
        pickle.dump(model, handle)
    text = document if isinstance(document, str) else yaml.safe_dump(
        document, default_flow_style=False)
    (directory / "MLmodel").write_text(text)
    (directory / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n")
    (directory / "conda.yaml").write_text(yaml.safe_dump({
        "channels": ["conda-forge"], "name": "mlflow-env",
        "dependencies": [f"python={platform.python_version()}", "pip<=24.0",
                         {"pip": REQUIREMENTS}]}, default_flow_style=False))
    (directory / "python_env.yaml").write_text(yaml.safe_dump({
        "python": platform.python_version(), "build_dependencies": ["pip==24.0"],
        "dependencies": ["-r requirements.txt"]}, default_flow_style=False))
    if example is not None:
        split = {"columns": [str(c) for c in example.columns],
                 "data": example.to_numpy().tolist()}
        (directory / "input_example.json").write_text(json.dumps(split))
    return directory

