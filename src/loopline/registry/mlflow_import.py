"""Importing an MLflow model directory into the registry, under an explicit trust decision.

    read the directory (``mlflow_model``: MLmodel, files, signature; nothing runs)
      → without trust: refuse (``UntrustedModelError``); nothing is loaded or written
      → record the trust decision (``ModelRegistry.trust_source``: the gate, then an audit
        entry with the actor, the source path and the pickle's SHA-256), committed first
      → unpickle exactly the bytes that were hashed
      → register with the ``sklearn`` flavor (skops: no later load unpickles), or, for an
        object that is not scikit-learn-compatible, the ``python`` flavor, whose version then
        gets the same trust decision (loading it runs code again)

The decision is committed before the pickle runs, so a payload that crashes the process
still leaves the record of who let it run. Version differences between MLflow's record and
this environment are returned as warnings, not raised.
"""

from __future__ import annotations

import pickle
import platform
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loopline.core.errors import (
    ConfigurationError,
    InvalidArgumentError,
    UntrustedModelError,
    UserCodeError,
)
from loopline.core.models import ModelVersion
from loopline.core.names import validate_name
from loopline.registry.flavors import PYTHON, SKLEARN
from loopline.registry.mlflow_model import MlflowModel, PickledModel, read_mlflow_model
from loopline.registry.mlflow_signature import settle_output
from loopline.registry.registration import Registration
from loopline.registry.service import ModelRegistry

SOURCE_FORMAT = "mlflow"


@dataclass(frozen=True, slots=True)
class MlflowImport:
    """An imported MLflow model: the new version, where it came from, and what to look at."""

    version: ModelVersion
    source: str
    pickle_sha256: str
    warnings: tuple[str, ...]


def _refusal(model: MlflowModel) -> UntrustedModelError:
    pickled = model.pickled
    return UntrustedModelError(
        SOURCE_FORMAT, f"{pickled.path} ({pickled.key}, sha256 {pickled.sha256}) is a "
                       f"{pickled.serialization_format} file, and unpickling it runs any code it "
                       "names; nothing was loaded or written. To import it, pass --trust "
                       "--reason TEXT (trust=True, reason=...)",
        (pickled.serialization_format,))


def _unpickle(pickled: PickledModel) -> tuple[Any, list[str]]:
    """Return the object in ``pickled`` and scikit-learn's version warnings while loading.

    Only the caller's trust decision allows this. scikit-learn's ``InconsistentVersionWarning``
    is collected (it is what a version difference looks like); other warnings pass on.
    """
    from sklearn.exceptions import InconsistentVersionWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        try:
            model = pickle.loads(pickled.data)  # trusted: the decision is committed (above)
        except ModuleNotFoundError as exc:
            raise ConfigurationError(f"the MLflow model needs the module {exc.name!r}, which is "
                                     "not installed here; install the packages in its "
                                     "requirements.txt") from exc
        except (pickle.UnpicklingError, EOFError) as exc:
            raise InvalidArgumentError(pickled.key, f"{pickled.path.name} is not a pickle: "
                                                    f"{exc}") from exc
        except Exception as exc:  # code the pickle named ran and failed: keep it as the cause
            raise UserCodeError(f"unpickling {pickled.path} raised {type(exc).__name__}: "
                                f"{exc}") from exc
    notes = []
    for item in caught:
        if issubclass(item.category, InconsistentVersionWarning):
            notes.append(" ".join(str(item.message).split()))
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return model, notes


def _version_warnings(source: MlflowModel) -> list[str]:
    import sklearn

    found = []
    if source.sklearn_version is None:
        found.append("MLflow recorded no scikit-learn version; check the predictions "
                     "(loopline models verify)")
    elif source.sklearn_version != sklearn.__version__:
        found.append(f"MLflow recorded scikit-learn {source.sklearn_version}, this environment "
                     f"has {sklearn.__version__}: predictions may differ; compare them before "
                     "serving")
    here = platform.python_version()
    if source.python_version and source.python_version.split(".")[:2] != here.split(".")[:2]:
        found.append(f"MLflow recorded Python {source.python_version}, this environment has "
                     f"{here}")
    return found


def _tags(source: MlflowModel) -> dict[str, Any]:
    given = source.metadata.get("tags")
    tags: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
    rest = {k: v for k, v in source.metadata.items() if k not in ("params", "metrics", "tags")}
    if rest:
        tags["mlflow.metadata"] = rest
    tags.update({f"mlflow.{key}": value for key, value in source.info.items()})
    tags.update({
        "source": f"{SOURCE_FORMAT}:{source.root}", "mlflow.flavor": source.flavor,
        "mlflow.pickle_sha256": source.pickled.sha256,
        "mlflow.serialization_format": source.pickled.serialization_format,
        "mlflow.environment": dict(source.environment)})
    if source.sklearn_version is not None:
        tags["mlflow.sklearn_version"] = source.sklearn_version
    return tags


def _registration(source: MlflowModel, model: Any) -> Registration:
    def section(key: str) -> dict[str, Any] | None:
        value = source.metadata.get(key)
        return dict(value) if isinstance(value, dict) else None

    example = None
    if source.signature is None and source.input_example is not None:
        import pandas as pd

        example = pd.DataFrame(source.input_example["data"],
                               columns=source.input_example["columns"])
    run = source.info.get("run_id")
    return Registration(
        signature=None if source.signature is None else settle_output(source.signature, model),
        metrics=section("metrics"), params=section("params"), tags=_tags(source),
        description=f"Imported from the MLflow model at {source.root}"
                    + (f" (MLflow run {run})" if run else ""),
        input_example=example)


def _register(registry: ModelRegistry, model: Any, name: str, source: MlflowModel,
              reason: str) -> tuple[ModelVersion, list[str]]:
    """Register ``model`` with the sklearn flavor, or the python flavor (trusted) otherwise."""
    registration = _registration(source, model)
    if SKLEARN.accepts(model):
        try:
            return registry.register_with(model, name, replace(registration,
                                                               flavor=SKLEARN.name)), []
        except InvalidArgumentError as exc:
            if exc.field != "model":  # the name was checked first: this is skops refusing
                raise
            why = f"skops cannot store it ({exc.problem})"
    else:
        why = f"a {type(model).__name__} is not scikit-learn-compatible"
    if not PYTHON.accepts(model):
        raise InvalidArgumentError(source.pickled.key, f"{source.pickled.path.name} holds a "
                                                       f"{type(model).__name__}, which has no "
                                                       "predict method; nothing was registered")
    version = registry.register_with(model, name, replace(registration, flavor=PYTHON.name))
    registry.trust(version.uri, reason)
    return version, [f"{why}: registered with the 'python' flavor (a pickle), and {version.uri}"
                     " carries this import's trust decision, since loading it runs code"]


def import_mlflow(registry: ModelRegistry, path: str | Path, name: str, *,
                  trust: bool = False, reason: str | None = None) -> MlflowImport:
    """Register the MLflow model directory ``path`` as the next version of ``name``.

    The directory's pickle runs code when loaded, so it is loaded only with ``trust=True``
    and a ``reason``, after the decision is recorded (see the module docstring). MLflow is
    not needed. The version's signature is MLflow's, in loopline's types; its tags carry
    ``source``, ``mlflow.run_id``, ``mlflow.model_uuid``, the pickle's SHA-256 and the
    source environment; params, metrics and tags in the MLmodel ``metadata`` block are kept.

    Raises:
        InvalidArgumentError: naming the key or file of the directory that is missing,
            malformed, outside it or unsupported; or ``reason`` when trusting without one.
        UntrustedModelError: without ``trust`` (nothing is loaded or written).
        PolicyDeniedError: when the gate denies the trust or the registration.
        ConfigurationError: when the pickle needs a module that is not installed.
        UserCodeError: when code the pickle names raises while loading.
    """
    validate_name(name, "model")
    source = read_mlflow_model(path)
    if not trust:
        raise _refusal(source)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidArgumentError("reason", "say why the MLflow model's pickle may run code "
                                             "(--reason TEXT)")
    registry.trust_source(name, {
        "format": SOURCE_FORMAT, "path": str(source.root), "file": str(source.pickled.path),
        "sha256": source.pickled.sha256, **{f"mlflow_{k}": v for k, v in source.info.items()},
    }, reason)
    model, notes = _unpickle(source.pickled)
    version, flavor_notes = _register(registry, model, name, source, reason)
    found = (*_version_warnings(source), *notes, *flavor_notes)
    return MlflowImport(version, str(source.root), source.pickled.sha256, found)
