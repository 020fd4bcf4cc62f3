"""Model flavors: round trips, determinism, the skops allow list, ONNX, and pickle refused."""

from __future__ import annotations

import importlib.util
import io
import json
import pathlib
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from loopline.core.errors import (
    ConfigurationError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    PolicyDeniedError,
    UntrustedModelError,
)
from loopline.registry.flavors import (
    ONNX,
    PYTHON,
    SKLEARN,
    UNTRUSTED,
    TrustContext,
    flavor_for,
    flavor_named,
    is_allowed,
    to_onnx,
    untrusted_types,
)

HAS_ONNX = all(importlib.util.find_spec(m) is not None
               for m in ("onnx", "onnxruntime", "skl2onnx"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="the ONNX extra is not installed "
                                                     "(pip install 'loopline[onnx]')")


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y


def _pipeline(X: pd.DataFrame, y: pd.Series) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)


class Doubler(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A custom transformer: its type is on no allow list."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X) * 2


class MeanModel:
    """A plain Python model for the pickle flavor."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, batch: Any) -> Any:
        return np.full(len(batch), self.value)


class FileDropper:
    """A malicious payload: unpickling it creates the file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return pathlib.Path.touch, (self.path,)

    def predict(self, batch: Any) -> Any:
        return batch


# -- sklearn --------------------------------------------------------------------------------

def test_a_sklearn_estimator_round_trips_with_equal_predictions(iris: Any) -> None:
    X, y = iris
    model = LogisticRegression(max_iter=1000).fit(X.to_numpy(), y)
    loaded = SKLEARN.load(SKLEARN.save(model), UNTRUSTED)
    np.testing.assert_array_equal(loaded.predict(X.to_numpy()), model.predict(X.to_numpy()))
    np.testing.assert_array_equal(loaded.predict_proba(X.to_numpy()),
                                  model.predict_proba(X.to_numpy()))
    assert loaded.classes == (0, 1, 2)
    assert loaded.flavor == "sklearn" and isinstance(loaded.raw, LogisticRegression)


def test_a_scaler_and_logistic_pipeline_round_trips_from_a_dataframe(iris: Any) -> None:
    X, y = iris
    model = _pipeline(X, y)
    loaded = SKLEARN.load(SKLEARN.save(model), UNTRUSTED)
    assert isinstance(loaded.raw, Pipeline)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.has_proba


def test_the_same_fitted_model_saves_to_the_same_bytes(iris: Any) -> None:
    X, y = iris
    assert SKLEARN.save(_pipeline(X, y)) == SKLEARN.save(_pipeline(X, y))


def test_a_model_holding_a_sparse_matrix_is_deterministic_and_loads(iris: Any) -> None:
    X, y = iris
    sparse = sp.csr_matrix(X.to_numpy())
    model = SVC().fit(sparse, y)
    data = SKLEARN.save(model)
    assert data == SKLEARN.save(SVC().fit(sparse, y))
    assert any(n.endswith(".npz") for n in zipfile.ZipFile(io.BytesIO(data)).namelist())
    loaded = SKLEARN.load(data, UNTRUSTED)
    np.testing.assert_array_equal(loaded.predict(sparse), model.predict(sparse))


def test_a_type_outside_the_allow_list_is_refused_and_named(iris: Any) -> None:
    X, y = iris
    model = make_pipeline(Doubler(), LogisticRegression(max_iter=1000)).fit(X, y)
    data = SKLEARN.save(model)
    name = f"{Doubler.__module__}.Doubler"
    with pytest.raises(UntrustedModelError) as caught:
        SKLEARN.load(data, UNTRUSTED)
    assert caught.value.untrusted == (name,)
    assert name in caught.value.message and "trust decision" in caught.value.message
    assert isinstance(caught.value, PolicyDeniedError)
    assert untrusted_types(data) == (name,)


def test_a_type_outside_the_allow_list_loads_once_trusted(iris: Any) -> None:
    X, y = iris
    model = make_pipeline(Doubler(), LogisticRegression(max_iter=1000)).fit(X, y)
    data = SKLEARN.save(model)
    for trust in (TrustContext.allowing([f"{Doubler.__module__}.Doubler"]),
                  TrustContext(trusted=True)):
        np.testing.assert_array_equal(SKLEARN.load(data, trust).predict(X), model.predict(X))


def _archive(schema: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
    return buffer.getvalue()


def _json_node(value: Any) -> dict[str, Any]:
    return {"__class__": type(value).__name__, "__module__": "builtins",
            "__loader__": "JsonNode", "content": json.dumps(value), "is_json": True}


def _memmap_payload(target: Path) -> bytes:
    """Return a crafted skops archive whose loading would create ``target`` via numpy.memmap."""
    shape = {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
             "content": [_json_node(1)]}
    arguments = [_json_node(str(target)), _json_node("uint8"), _json_node("w+"),
                 _json_node(0), shape]
    return _archive({"__class__": "memmap", "__module__": "numpy",
                     "__loader__": "ConstructorFromReduceNode", "protocol": 2,
                     "_skops_version": "0.16.0",
                     "content": {"__class__": "tuple", "__module__": "builtins",
                                 "__loader__": "TupleNode", "content": arguments}})


def test_a_crafted_archive_naming_a_numpy_class_that_writes_files_is_refused(
        tmp_path: Path) -> None:
    import skops.io

    live = tmp_path / "live"
    skops.io.loads(_memmap_payload(live), trusted=["numpy.memmap"])
    assert live.exists(), "the payload is live: skops creates the file once trusted"
    target = tmp_path / "pwned"
    with pytest.raises(UntrustedModelError) as caught:
        SKLEARN.load(_memmap_payload(target), UNTRUSTED)
    assert caught.value.untrusted == ("numpy.memmap",)
    assert not target.exists()


@pytest.mark.parametrize("name", [
    "sklearn.tree._tree.Tree", "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.metrics._classification.accuracy_score", "numpy.ndarray", "numpy.float64",
    "numpy.dtypes.Float64DType", "numpy.log1p", "numpy.mean",
    "numpy.random.mtrand.RandomState", "scipy.sparse._csr.csr_matrix",
    "collections.OrderedDict",
])
def test_known_safe_types_are_allowed(name: str) -> None:
    assert is_allowed(name)


@pytest.mark.parametrize("name", [
    "numpy.memmap", "numpy.load", "numpy.lib.npyio.NpzFile", "numpy.testing.runstring",
    "sklearn.datasets.dump_svmlight_file", "sklearn.utils._testing.TempMemmap",
    "sklearn.tree.export_graphviz", "scipy.io.netcdf_file", "builtins.eval", "os.system",
    "subprocess.Popen", "sklearn.utils.fixes.threadpool_limits", "sklearn..Tree",
    "sklearn.tree._tree.NoSuchThing", "numpy",
])
def test_dangerous_or_unknown_names_are_not_allowed(name: str) -> None:
    assert not is_allowed(name)


@pytest.mark.parametrize("data", [b"", b"not a model at all", _archive({"nonsense": 1})[:40]],
                         ids=["empty", "text", "truncated-zip"])
def test_garbage_bytes_fail_to_load_with_a_clear_integrity_error(data: bytes) -> None:
    with pytest.raises(IntegrityError, match="not a readable skops archive"):
        SKLEARN.load(data, UNTRUSTED)


def test_a_zip_without_a_schema_is_not_a_skops_archive() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.pkl", b"\x80\x05N.")
    with pytest.raises(IntegrityError, match=r"holds no schema\.json"):
        SKLEARN.load(buffer.getvalue(), TrustContext(trusted=True))


def test_saving_a_model_with_a_lambda_is_refused_naming_it(iris: Any) -> None:
    X, y = iris
    model = make_pipeline(FunctionTransformer(lambda v: v), StandardScaler(),
                          LogisticRegression()).fit(X, y)
    with pytest.raises(InvalidArgumentError, match="<lambda>"):
        SKLEARN.save(model)


def test_saving_something_that_is_not_an_estimator_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="not a scikit-learn-compatible"):
        SKLEARN.save({"weights": [1, 2]})


# -- choosing a flavor ----------------------------------------------------------------------

def test_flavors_are_chosen_by_object_and_by_name(iris: Any) -> None:
    X, y = iris
    assert flavor_for(_pipeline(X, y)) is SKLEARN
    assert flavor_named("python") is PYTHON and flavor_named("onnx") is ONNX
    with pytest.raises(InvalidArgumentError, match="'python'"):
        flavor_for(MeanModel(1.0))
    with pytest.raises(NotFoundError, match="known flavors: sklearn, onnx, python"):
        flavor_named("pickle")


def test_importing_the_registry_imports_no_ml_library() -> None:
    probe = ("import sys, loopline.registry, loopline.registry.flavors, "
             "loopline.registry.signatures\n"
             "heavy = {'sklearn', 'skops', 'onnx', 'onnxruntime', 'skl2onnx', 'scipy'}\n"
             "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n")
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


# -- onnx -----------------------------------------------------------------------------------

@needs_onnx
def test_an_onnx_export_predicts_like_the_pipeline_within_float32_tolerance(iris: Any) -> None:
    X, y = iris
    model = _pipeline(X, y)
    proto = to_onnx(model, X.head())
    assert flavor_for(proto) is ONNX
    data = ONNX.save(proto)
    assert data == ONNX.save(to_onnx(model, X.head()))
    loaded = ONNX.load(data, UNTRUSTED)
    np.testing.assert_array_equal(loaded.predict(X[X.columns[::-1]]), model.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-5)
    assert loaded.classes == (0, 1, 2) and loaded.flavor == "onnx"


@needs_onnx
def test_an_onnx_export_with_text_columns_feeds_one_input_per_column() -> None:
    frame = pd.DataFrame({"size": np.linspace(0, 1, 40), "n": np.arange(40),
                          "city": pd.Categorical(["a", "b", "c", "d"] * 10)})
    labels = np.array(["no", "yes"] * 20)
    columns = ColumnTransformer([("num", StandardScaler(), ["size", "n"]),
                                 ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])])
    model = make_pipeline(columns, LogisticRegression()).fit(frame, labels)
    loaded = ONNX.load(ONNX.save(to_onnx(model, frame)), UNTRUSTED)
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    assert loaded.classes == ("no", "yes")
    with pytest.raises(InvalidArgumentError, match=r"lacks the columns \['city'\]"):
        loaded.predict(frame.drop(columns=["city"]))


@needs_onnx
def test_an_onnx_regressor_predicts_a_flat_array_and_has_no_probabilities(iris: Any) -> None:
    X, y = iris
    model = RandomForestRegressor(n_estimators=5, random_state=0).fit(X.to_numpy(), y * 1.5)
    loaded = ONNX.load(ONNX.save(to_onnx(model, X.to_numpy())), UNTRUSTED)
    np.testing.assert_allclose(loaded.predict(X.to_numpy()), model.predict(X.to_numpy()),
                               rtol=1e-5)
    assert not loaded.has_proba and loaded.classes is None
    with pytest.raises(InvalidArgumentError, match="gives no probabilities"):
        loaded.predict_proba(X.to_numpy())
    with pytest.raises(InvalidArgumentError, match="refused"):
        loaded.predict(X.to_numpy()[:, :3])


@needs_onnx
@pytest.mark.parametrize("data", [b"", b"garbage \x00\x01 bytes"])
def test_onnx_garbage_fails_with_an_integrity_error(data: bytes) -> None:
    with pytest.raises(IntegrityError, match="'onnx' artifact"):
        ONNX.load(data, UNTRUSTED)


@needs_onnx
def test_an_onnx_model_pointing_at_external_data_is_refused() -> None:
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [weight])
    data = helper.make_model(graph).SerializeToString()
    with pytest.raises(IntegrityError, match="external data for w"):
        ONNX.load(data, UNTRUSTED)


@needs_onnx
def test_an_onnx_model_with_malformed_loopline_metadata_is_refused(iris: Any) -> None:
    X, y = iris
    proto = to_onnx(_pipeline(X, y), X)
    for entry in proto.metadata_props:
        if entry.key == "loopline.layout":
            entry.value = '"sideways"'
    with pytest.raises(IntegrityError, match="metadata does not fit"):
        ONNX.load(ONNX.save(proto), UNTRUSTED)


def test_the_onnx_flavor_without_its_extra_names_the_install_command(
        iris: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = iris
    monkeypatch.setitem(sys.modules, "skl2onnx", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'loopline\[onnx\]'"):
        to_onnx(_pipeline(X, y), X)


def test_saving_a_non_onnx_object_with_the_onnx_flavor_says_how_to_convert(iris: Any) -> None:
    X, y = iris
    with pytest.raises(InvalidArgumentError, match=r"to_onnx\(model, sample\)"):
        ONNX.save(_pipeline(X, y))


# -- python (pickle) ------------------------------------------------------------------------

def test_an_untrusted_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    payload = pickle.dumps(FileDropper(target))
    with pytest.raises(UntrustedModelError) as caught:
        PYTHON.load(payload, UNTRUSTED)
    assert "no audited trust decision" in caught.value.message
    assert caught.value.untrusted == ("pickle",)
    assert not target.exists()
    with pytest.raises(UntrustedModelError):
        PYTHON.load(payload, TrustContext.allowing(["pathlib.Path.touch"]))
    assert not target.exists(), "allowing types is not trusting a pickle"


def test_the_payload_is_live_so_the_refusal_is_what_protects(tmp_path: Path) -> None:
    target = tmp_path / "ran"
    with pytest.raises(IntegrityError, match="no predict method"):
        PYTHON.load(pickle.dumps(FileDropper(target)), TrustContext(trusted=True))
    assert target.exists()


def test_a_trusted_pickle_loads_and_predicts() -> None:
    loaded = PYTHON.load(PYTHON.save(MeanModel(2.5)), TrustContext(trusted=True))
    np.testing.assert_array_equal(loaded.predict([[1], [2]]), [2.5, 2.5])
    assert loaded.classes is None and not loaded.has_proba
    with pytest.raises(InvalidArgumentError, match="gives no probabilities"):
        loaded.predict_proba([[1]])


def test_trusted_garbage_fails_with_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="does not unpickle"):
        PYTHON.load(b"\x80\x05garbage", TrustContext(trusted=True))


def test_the_python_flavor_refuses_objects_without_predict() -> None:
    with pytest.raises(InvalidArgumentError, match="predict"):
        PYTHON.save(object())


def test_an_estimator_refusing_a_batch_raises_invalid_argument(iris: Any) -> None:
    X, y = iris
    loaded = SKLEARN.load(SKLEARN.save(_pipeline(X, y)), UNTRUSTED)
    with pytest.raises(InvalidArgumentError, match="the model refused it"):
        loaded.predict(X.iloc[:, :2])
