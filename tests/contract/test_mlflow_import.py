"""Importing MLflow model directories (written by a fixture, without MLflow) on every backend:
a trusted import registers an skops version with MLflow's signature and run id, the trust
decision is audited before the pickle runs, an untrusted import runs and writes nothing, and
bad directories give errors naming the key."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
from mlflow_fixtures import (
    MODEL_UUID,
    REQUIREMENTS,
    RUN_ID,
    column_signature,
    mlmodel,
    write_model_dir,
)
from model_payloads import FileDropper, MeanModel
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from loopline.app import Workspace
from loopline.cli.main import run
from loopline.core.errors import (
    InvalidArgumentError,
    PathEscapeError,
    PolicyDeniedError,
    UntrustedModelError,
)
from loopline.core.gates import GateAction, GateDecision, GateRequest
from loopline.registry.mlflow_import import import_mlflow
from loopline.registry.service import ModelRegistry
from loopline.registry.signatures import Signature
from loopline.store import AuditFilter

REASON = "exported by our own MLflow server, run reviewed"


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="module")
def model(iris: tuple[pd.DataFrame, pd.Series]) -> LogisticRegression:
    X, y = iris
    return LogisticRegression(max_iter=1000).fit(X, y)


@pytest.fixture
def model_dir(tmp_path: Path, model: LogisticRegression, iris: Any) -> Path:
    X, _ = iris
    return write_model_dir(tmp_path / "mlflow-model", model, mlmodel(column_signature(X)),
                           X.head(5))


def _audit(ws: Workspace, action: str) -> list[Any]:
    return ws.store.audit.entries(AuditFilter(action=action, newest_first=False, limit=100))


def _written(ws: Workspace) -> tuple[Any, ...]:
    """Return what an import could write: models, artifacts, events, the audit head."""
    return (ws.models.models(), sum(1 for _ in ws.artifacts.list()), ws.store.events.count(),
            ws.store.audit.head())


class Deny:
    """A gate that denies one action and allows the rest."""

    def __init__(self, action: GateAction) -> None:
        self.action = action

    def check(self, request: GateRequest) -> GateDecision:
        if request.action == self.action:
            return GateDecision(False, "imports need a reviewer")
        return GateDecision(True, "fine")


# -- a trusted import --------------------------------------------------------------------------


def test_a_trusted_import_registers_an_skops_version_that_predicts_the_same(
        ws: Workspace, model_dir: Path, model: LogisticRegression, iris: Any) -> None:
    X, _ = iris
    result = import_mlflow(ws.models, model_dir, "iris", trust=True, reason=REASON)
    version = result.version
    assert (version.uri, version.flavor, result.warnings) == ("models:/iris/1", "sklearn", ())
    loaded = ws.models.load("iris/1")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))
    assert ws.models.get("iris/1").trust is None  # skops: loading never needs trust
    assert version.signature is not None
    signature = Signature.from_dict(version.signature)
    assert signature.names == tuple(X.columns)
    assert [(c.dtype, c.nullable) for c in signature.inputs] == [("float64", False)] * 4
    assert (signature.output.type, signature.output.classes) == ("class", (0, 1, 2))


def test_the_version_carries_the_mlflow_run_source_and_environment(
        ws: Workspace, model_dir: Path) -> None:
    result = import_mlflow(ws.models, model_dir, "iris", trust=True, reason=REASON)
    tags = result.version.tags
    digest = hashlib.sha256((model_dir / "model.pkl").read_bytes()).hexdigest()
    assert tags["mlflow.run_id"] == RUN_ID and tags["mlflow.model_uuid"] == MODEL_UUID
    assert tags["source"] == f"mlflow:{model_dir.resolve()}"
    assert tags["mlflow.pickle_sha256"] == digest == result.pickle_sha256
    assert tags["mlflow.utc_time_created"] == "2024-05-02 09:13:27.412345"
    assert (tags["mlflow.flavor"], tags["mlflow.sklearn_version"]) == ("sklearn",
                                                                      sklearn.__version__)
    environment = tags["mlflow.environment"]
    assert environment["python"] == platform.python_version()
    assert environment["requirements"] == REQUIREMENTS
    assert environment["conda"]["dependencies"][-1] == {"pip": REQUIREMENTS}
    assert environment["python_env"]["dependencies"] == ["-r requirements.txt"]
    assert RUN_ID in (result.version.description or "")


def test_the_trust_decision_is_audited_before_the_version_is_registered(
        ws: Workspace, model_dir: Path) -> None:
    import_mlflow(ws.models, model_dir, "iris", trust=True, reason=REASON)
    [trusted] = _audit(ws, "model.source_trusted")
    [registered] = _audit(ws, "model.version_registered")
    assert trusted.seq < registered.seq and trusted.actor == "tester"
    assert trusted.subject == "models:/iris"
    source = trusted.after["source"]
    assert source["path"] == str(model_dir.resolve())
    assert source["file"] == str(model_dir.resolve() / "model.pkl")
    assert source["sha256"] == hashlib.sha256((model_dir / "model.pkl").read_bytes()).hexdigest()
    assert (trusted.after["reason"], trusted.after["gate"]["allowed"]) == (REASON, True)


def test_params_metrics_and_tags_in_the_mlmodel_metadata_are_kept(
        ws: Workspace, tmp_path: Path, model: LogisticRegression, iris: Any) -> None:
    X, _ = iris
    document = mlmodel(column_signature(X))
    document["metadata"] = {"params": {"C": 1.0}, "metrics": {"accuracy": 0.97},
                            "tags": {"owner": "ann"}, "team": "fraud"}
    version = import_mlflow(ws.models, write_model_dir(tmp_path / "m", model, document, X),
                            "iris", trust=True, reason=REASON).version
    assert (dict(version.params), dict(version.metrics)) == ({"C": 1.0}, {"accuracy": 0.97})
    assert version.tags["owner"] == "ann" and version.tags["mlflow.metadata"] == {"team": "fraud"}


# -- without trust, nothing runs and nothing is written ----------------------------------------


def test_an_import_without_trust_is_refused_and_writes_nothing(
        ws: Workspace, model_dir: Path) -> None:
    before = _written(ws)
    with pytest.raises(UntrustedModelError, match="--trust --reason") as caught:
        import_mlflow(ws.models, model_dir, "iris")
    assert hashlib.sha256((model_dir / "model.pkl").read_bytes()).hexdigest() in \
        caught.value.message
    with pytest.raises(InvalidArgumentError, match="invalid reason"):
        import_mlflow(ws.models, model_dir, "iris", trust=True, reason="  ")
    assert _written(ws) == before


def test_a_malicious_pickle_never_runs_without_trust(ws: Workspace, tmp_path: Path,
                                                      iris: Any) -> None:
    X, _ = iris
    target = tmp_path / "pwned"
    directory = write_model_dir(tmp_path / "m", FileDropper(target),
                                mlmodel(column_signature(X)), X)
    before = _written(ws)
    with pytest.raises(UntrustedModelError):
        import_mlflow(ws.models, directory, "iris", reason="a reason is not a decision")
    governed = ModelRegistry(ws.store, ws.artifacts.blobs, "mallory", gate=Deny(GateAction.TRUST))
    with pytest.raises(PolicyDeniedError, match="imports need a reviewer"):
        import_mlflow(governed, directory, "iris", trust=True, reason=REASON)
    assert not target.exists() and _written(ws) == before
    # Trusted, the payload runs (so refusing is what saved us), and the record of who let
    # it run was written first; the object it left is no model, so nothing is registered.
    with pytest.raises(InvalidArgumentError, match="pickled_model: model.pkl holds a NoneType"):
        import_mlflow(ws.models, directory, "iris", trust=True, reason=REASON)
    assert target.exists() and ws.models.models() == []
    [entry] = _audit(ws, "model.source_trusted")
    assert entry.after["source"]["sha256"] == hashlib.sha256(
        (directory / "model.pkl").read_bytes()).hexdigest()


# -- other shapes of MLflow models ------------------------------------------------------------


def test_an_object_that_is_not_sklearn_compatible_gets_the_python_flavor_and_the_trust(
        ws: Workspace, tmp_path: Path, iris: Any) -> None:
    X, _ = iris
    document = mlmodel(None)
    directory = write_model_dir(tmp_path / "m", MeanModel(2.5), document, X.head(3))
    result = import_mlflow(ws.models, directory, "mean", trust=True, reason=REASON)
    assert result.version.flavor == "python"
    assert any("'python' flavor" in note for note in result.warnings), result.warnings
    details = ws.models.get("mean/1")
    assert details.trust is not None and details.trust.reason == REASON
    np.testing.assert_array_equal(ws.models.load("mean/1").predict(X.head(2)), [2.5, 2.5])
    assert [e.subject for e in _audit(ws, "model.trust_granted")] == ["models:/mean/1"]


def test_a_scikit_learn_version_difference_is_a_warning_not_an_error(
        ws: Workspace, tmp_path: Path, model: LogisticRegression, iris: Any) -> None:
    X, _ = iris
    directory = write_model_dir(tmp_path / "m", model,
                                mlmodel(column_signature(X), sklearn_version="1.3.0"), X)
    here = sklearn.__version__.encode()
    older = b"9" * len(here)
    pickled = (directory / "model.pkl").read_bytes()
    marker = b"\x8c" + bytes([len(here)]) + here  # the pickled _sklearn_version string
    assert marker in pickled
    (directory / "model.pkl").write_bytes(pickled.replace(marker, marker[:2] + older))
    result = import_mlflow(ws.models, directory, "iris", trust=True, reason=REASON)
    assert any("scikit-learn 1.3.0" in note for note in result.warnings), result.warnings
    assert any(older.decode() in note for note in result.warnings), result.warnings
    np.testing.assert_array_equal(ws.models.load("iris/1").predict(X), model.predict(X))


def test_a_python_function_only_model_and_one_without_signature_import(
        ws: Workspace, tmp_path: Path, model: LogisticRegression, iris: Any) -> None:
    X, _ = iris
    document = mlmodel(None)
    del document["flavors"]["sklearn"]
    result = import_mlflow(ws.models, write_model_dir(tmp_path / "m", model, document, X),
                           "iris", trust=True, reason=REASON)
    assert result.version.tags["mlflow.flavor"] == "python_function"
    assert any("no scikit-learn version" in note for note in result.warnings)
    assert result.version.signature is not None  # inferred from MLflow's input example
    signature = Signature.from_dict(result.version.signature)
    assert signature.names == tuple(X.columns)
    assert signature.inputs[0].minimum == X.iloc[:, 0].min()


# -- bad directories ---------------------------------------------------------------------------

Breaker = Callable[[Path, dict[str, Any]], "dict[str, Any] | str | None"]


def _flavors(**change: Any) -> Breaker:
    def breaker(directory: Path, document: dict[str, Any]) -> dict[str, Any]:
        document["flavors"]["sklearn"].update(change)
        return document
    return breaker


def _signature(inputs: list[dict[str, Any]]) -> Breaker:
    def breaker(directory: Path, document: dict[str, Any]) -> dict[str, Any]:
        document["signature"]["inputs"] = json.dumps(inputs)
        return document
    return breaker


def _link_out(directory: Path, document: dict[str, Any]) -> dict[str, Any]:
    outside = directory.parent / "outside.pkl"
    outside.write_bytes(b"not yours")
    (directory / "link.pkl").symlink_to(outside)
    return _flavors(pickled_model="link.pkl")(directory, document)  # type: ignore[return-value]


def _only(flavors: dict[str, Any]) -> Breaker:
    def breaker(directory: Path, document: dict[str, Any]) -> dict[str, Any]:
        document["flavors"] = flavors
        return document
    return breaker


def _missing_mlmodel(directory: Path, document: dict[str, Any]) -> None:
    (directory / "MLmodel").unlink()


def _no_pickled_model(directory: Path, document: dict[str, Any]) -> dict[str, Any]:
    del document["flavors"]["sklearn"]["pickled_model"]
    return document


TENSOR = [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]
BAD_DIRECTORIES: list[tuple[Breaker, type[Exception], str]] = [
    (_missing_mlmodel, InvalidArgumentError, "invalid MLmodel: no MLmodel file"),
    (lambda d, doc: "flavors: [unclosed", InvalidArgumentError, "invalid MLmodel: is not valid "
                                                               "YAML"),
    (lambda d, doc: "- a list\n", InvalidArgumentError, "invalid MLmodel: must be a mapping"),
    (_only({"keras": {"keras_version": "2.15"}}), InvalidArgumentError,
     r"invalid flavors: has neither a 'sklearn' nor a 'python_function' flavor \(found: keras"),
    (_only({"python_function": {"loader_module": "mlflow.pyfunc.model",
                                "python_model": "python_model.pkl"}}), InvalidArgumentError,
     "invalid flavors.python_function.loader_module: 'mlflow.pyfunc.model'"),
    (_flavors(pickled_model="../../etc/passwd"), PathEscapeError,
     "invalid flavors.sklearn.pickled_model: '../../etc/passwd' would leave its root"),
    (_flavors(pickled_model="/etc/passwd"), PathEscapeError,
     "invalid flavors.sklearn.pickled_model: '/etc/passwd' would leave"),
    (_link_out, PathEscapeError, "invalid flavors.sklearn.pickled_model: 'link.pkl' would"),
    (_flavors(pickled_model="nope.pkl"), InvalidArgumentError,
     "invalid flavors.sklearn.pickled_model: names 'nope.pkl', which is not in"),
    (_no_pickled_model, InvalidArgumentError, "invalid flavors.sklearn.pickled_model: is missing"),
    (_flavors(serialization_format="joblib"), InvalidArgumentError,
     "invalid flavors.sklearn.serialization_format: 'joblib'"),
    (_signature(TENSOR), InvalidArgumentError, r"invalid signature.inputs\[0\]: is a tensor spec"),
    (_signature([{"type": "double", "name": "a"}, {"type": "binary", "name": "b"}]),
     InvalidArgumentError, r"invalid signature.inputs\[1\].type: 'binary' \(column 'b'\)"),
    (_signature([{"type": "double", "name": "a"}, {"type": "long", "name": "a"}]),
     InvalidArgumentError, "name the column 'a' twice"),
]


def test_bad_directories_give_errors_naming_the_key_and_write_nothing(
        ws: Workspace, tmp_path: Path, model: LogisticRegression, iris: Any) -> None:
    X, _ = iris
    before = _written(ws)
    for index, (breaker, error, message) in enumerate(BAD_DIRECTORIES):
        directory = write_model_dir(tmp_path / f"bad{index}", model,
                                    mlmodel(column_signature(X)), X)
        document = breaker(directory, mlmodel(column_signature(X)))
        if document is not None:
            text = document if isinstance(document, str) else json.dumps(document)
            (directory / "MLmodel").write_text(text)  # JSON is YAML
        with pytest.raises(error, match=message):
            import_mlflow(ws.models, directory, "iris", trust=True, reason=REASON)
    with pytest.raises(InvalidArgumentError, match="invalid path: .* does not exist"):
        import_mlflow(ws.models, tmp_path / "nowhere", "iris", trust=True, reason=REASON)
    assert _written(ws) == before


# -- the command -------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], ws: Workspace, db_url: str,
         *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        run(["--workspace", str(ws.config_dir.parent), "--db-url", db_url, "models",
             "import-mlflow", *args])
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


def test_the_command_refuses_without_trust_and_imports_with_it(
        ws: Workspace, db_url: str, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, ws, db_url, str(model_dir), "--name", "iris")
    assert code == 9 and "--trust --reason TEXT" in err and ws.models.models() == []
    code, _, err = _cli(capsys, ws, db_url, str(model_dir), "--name", "iris", "--trust")
    assert code == 5 and "invalid reason" in err
    code, out, _ = _cli(capsys, ws, db_url, str(model_dir), "--name", "iris", "--trust",
                        "--reason", REASON, "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert [shown["version"][key] for key in ("name", "version", "flavor")] == [
        "iris", 1, "sklearn"]
    assert shown["version"]["tags"]["mlflow.run_id"] == RUN_ID and shown["warnings"] == []
    code, out, _ = _cli(capsys, ws, db_url, str(model_dir), "--name", "iris", "--trust",
                        "--reason", REASON)
    assert code == 0 and "as models:/iris/2 (flavor sklearn" in " ".join(out.split())
    assert [e.actor for e in _audit(ws, "model.source_trusted")] == ["tester", "tester"]
