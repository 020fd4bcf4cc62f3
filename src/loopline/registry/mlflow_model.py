"""An MLflow model directory read without MLflow, and without running anything from it.

The ``MLmodel`` YAML names the flavors; loopline imports the ``sklearn`` flavor (its
``pickled_model``) or, without it, a ``python_function`` flavor whose ``loader_module`` is
``mlflow.sklearn`` (its ``model_path``). The pickle is read as bytes and hashed here, never
unpickled: that happens in ``mlflow_import``, under a trust decision, from these same bytes,
so what was hashed and audited is exactly what runs. The signature is converted
(``mlflow_signature``); ``requirements.txt``, ``conda.yaml`` and ``python_env.yaml`` are kept as
the source environment; a dataframe input example (split orient) is kept for a model that
has no signature. Every problem raises ``InvalidArgumentError`` naming the key or file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.core.errors import InvalidArgumentError
from loopline.registry.mlflow_files import (
    load_yaml,
    member,
    model_directory,
    read_limited,
    read_text,
)
from loopline.registry.mlflow_signature import MlflowSignature, parse_signature

MLMODEL = "MLmodel"
MAX_PICKLE_BYTES = 2 << 30
FORMATS = ("pickle", "cloudpickle")
SKLEARN_LOADER = "mlflow.sklearn"
INFO_KEYS = ("run_id", "model_uuid", "utc_time_created", "mlflow_version", "artifact_path")
_ENV_FILES = {"requirements": "requirements.txt", "conda": "conda.yaml",
              "python_env": "python_env.yaml"}
_ENV_KEYS = {"conda": "conda", "virtualenv": "python_env"}  # python_function.env → ours


@dataclass(frozen=True, slots=True)
class PickledModel:
    """The pickle an MLflow flavor names: where, which key named it, its bytes and hash."""

    path: Path
    key: str
    serialization_format: str
    data: bytes
    sha256: str


@dataclass(frozen=True, slots=True)
class MlflowModel:
    """What an MLflow model directory says, checked; nothing from it has run.

    ``flavor`` is the MLflow flavor whose file is imported (``sklearn`` or
    ``python_function``); ``info`` holds ``INFO_KEYS`` that are present, as text;
    ``metadata`` is the MLmodel's free ``metadata`` block; ``environment`` the source
    environment (python version, requirements, conda and virtualenv specs).
    """

    root: Path
    flavor: str
    pickled: PickledModel
    sklearn_version: str | None
    python_version: str | None
    signature: MlflowSignature | None
    input_example: Mapping[str, Any] | None
    info: Mapping[str, str]
    metadata: Mapping[str, Any]
    environment: Mapping[str, Any]


def _mapping(value: Any, key: str, required: bool = True) -> Mapping[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        problem = "is missing" if value is None else f"must be a mapping, not {value!r}"
        raise InvalidArgumentError(key, problem)
    return value


def _text(block: Mapping[str, Any], key: str, field: str) -> str | None:
    value = block.get(key)
    if value is None:
        return None
    if isinstance(value, Mapping | list):
        raise InvalidArgumentError(field, f"must be a text, not {value!r}")
    return str(value)


def _pickled(root: Path, flavors: Mapping[str, Any]) -> tuple[str, PickledModel]:
    """Return the MLflow flavor to import and the pickle it names."""
    if "sklearn" in flavors:
        block = _mapping(flavors["sklearn"], "flavors.sklearn")
        flavor, key = "sklearn", "flavors.sklearn.pickled_model"
        relative, fmt = block.get("pickled_model"), block.get("serialization_format", "pickle")
        if fmt not in FORMATS:
            raise InvalidArgumentError("flavors.sklearn.serialization_format",
                                       f"{fmt!r} is not one of {', '.join(FORMATS)}")
    elif "python_function" in flavors:
        block = _mapping(flavors["python_function"], "flavors.python_function")
        loader = block.get("loader_module")
        if loader != SKLEARN_LOADER:
            raise InvalidArgumentError(
                "flavors.python_function.loader_module",
                f"{loader!r}: only python_function models saved by {SKLEARN_LOADER} import "
                "(their file is a scikit-learn pickle); other loaders need MLflow to load")
        flavor, key = "python_function", "flavors.python_function.model_path"
        relative, fmt = block.get("model_path"), "pickle"
    else:
        found = ", ".join(sorted(flavors)) or "none"
        raise InvalidArgumentError("flavors", f"has neither a 'sklearn' nor a 'python_function' "
                                              f"flavor (found: {found}); loopline imports "
                                              "scikit-learn models")
    if relative is None:
        raise InvalidArgumentError(key, "is missing; it names the model's pickle file")
    path = member(root, relative, key)
    data = read_limited(path, key, MAX_PICKLE_BYTES)
    return flavor, PickledModel(path, key, str(fmt), data, hashlib.sha256(data).hexdigest())


def _requirements(path: Path, key: str) -> list[str]:
    lines = (line.strip() for line in read_text(path, key).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _environment(root: Path, pyfunc: Mapping[str, Any], python: str | None) -> dict[str, Any]:
    """Return the source environment: the files the flavor names, else those present."""
    named: dict[str, tuple[Any, str]] = {
        ours: (default, default) for ours, default in _ENV_FILES.items()
        if (root / default).is_file()}
    env = pyfunc.get("env")
    if isinstance(env, str):  # MLflow 1.x: the conda file's name
        named["conda"] = (env, "flavors.python_function.env")
    elif isinstance(env, Mapping):
        for theirs, ours in _ENV_KEYS.items():
            if theirs in env:
                named[ours] = (env[theirs], f"flavors.python_function.env.{theirs}")
    found: dict[str, Any] = {"python": python}
    for ours, (relative, key) in sorted(named.items()):
        path = member(root, relative, key)
        found[ours] = _requirements(path, key) if ours == "requirements" else load_yaml(path,
                                                                                         key)
    return found


def _input_example(root: Path, info: Any) -> Mapping[str, Any] | None:
    """Return a dataframe example (split orient) as ``{"columns": [...], "data": [...]}``."""
    block = _mapping(info, "saved_input_example_info", required=False)
    if block.get("type") != "dataframe" or block.get("pandas_orient", "split") != "split":
        return None
    key = "saved_input_example_info.artifact_path"
    path = member(root, block.get("artifact_path"), key)
    try:
        example = json.loads(read_text(path, key))
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(key, f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(example, dict) or not isinstance(example.get("columns"), list) \
            or not isinstance(example.get("data"), list):
        raise InvalidArgumentError(key, f"{path.name} is not a split-orient dataframe "
                                        '({"columns": [...], "data": [[...]]})')
    return {"columns": example["columns"], "data": example["data"]}


def read_mlflow_model(path: str | Path) -> MlflowModel:
    """Return the MLflow model directory ``path`` as checked data; nothing in it runs.

    Raises:
        InvalidArgumentError: naming ``path``, ``MLmodel``, the key (``flavors``,
            ``flavors.sklearn.pickled_model``, ``signature.inputs[2].type``, ...) or the file
            that is missing, malformed, outside the directory or unsupported.
    """
    root = model_directory(path)
    if not (root / MLMODEL).exists():
        raise InvalidArgumentError(MLMODEL, f"no MLmodel file in {root}; give the MLflow model "
                                            "folder (e.g. mlruns/<experiment>/<run>/artifacts/"
                                            "model)")
    document = _mapping(load_yaml(member(root, MLMODEL, MLMODEL), MLMODEL), MLMODEL)
    flavors = _mapping(document.get("flavors"), "flavors")
    flavor, pickled = _pickled(root, flavors)
    sklearn = _mapping(flavors.get("sklearn"), "flavors.sklearn", required=False)
    pyfunc = _mapping(flavors.get("python_function"), "flavors.python_function",
                      required=False)
    python = _text(pyfunc, "python_version", "flavors.python_function.python_version")
    info = {key: text for key in INFO_KEYS
            if (text := _text(document, key, key)) is not None}
    return MlflowModel(
        root=root, flavor=flavor, pickled=pickled,
        sklearn_version=_text(sklearn, "sklearn_version", "flavors.sklearn.sklearn_version"),
        python_version=python, signature=parse_signature(document.get("signature")),
        input_example=_input_example(root, document.get("saved_input_example_info")),
        info=info, metadata=_mapping(document.get("metadata"), "metadata", required=False),
        environment=_environment(root, pyfunc, python))
