"""Data outputs: codecs round-trip and are deterministic, never unpickle, and refuse early."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from loopline import pipeline, task
from loopline.artifacts import ContentAddressedStore
from loopline.core.errors import IntegrityError, InvalidArgumentError
from loopline.pipelines import build_plan
from loopline.pipelines.codecs import ARROW_TABLE, NDARRAY, TABLE, storable_annotation
from loopline.pipelines.outputs import (
    content_hash,
    decode_output,
    encode_output,
    outputs_available,
)


@pytest.fixture
def blobs(tmp_path: Path) -> ContentAddressedStore:
    return ContentAddressedStore.from_url(tmp_path / "artifacts")


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "x": np.arange(4, dtype="int64"),
        "y": [0.5, np.nan, 2.5, -1.0],
        "label": ["a", "b", None, "d"],
        "when": pd.date_range("2024-01-01", periods=4, tz="UTC"),
        "kind": pd.Categorical(["p", "q", "p", "q"]),
        "n": pd.array([1, None, 3, 4], dtype="Int64"),
    }, index=pd.Index(["k0", "k1", "k2", "k3"], name="key"))


# -- round trips --------------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    _frame(),
    pd.DataFrame({"a": [1, 2, 3]}),
    pd.DataFrame({"a": [1, 2]}, index=pd.RangeIndex(10, 14, 2, name="r")),
    pd.DataFrame({"a": [1, 2]}, index=pd.MultiIndex.from_tuples([("x", 1), ("y", 2)],
                                                                 names=["k", "n"])),
    pd.DataFrame(),
], ids=["mixed", "range-index", "stepped-range", "multi-index", "empty"])
def test_a_dataframe_round_trips_through_the_artifact_store_with_its_index(
        frame: pd.DataFrame, blobs: ContentAddressedStore) -> None:
    record = encode_output("t", frame, blobs)
    assert record["kind"] == "table" and blobs.exists(record["digest"])
    assert record["size"] == blobs.info(record["digest"]).size
    pd.testing.assert_frame_equal(decode_output(record, blobs), frame)


def test_an_arrow_table_round_trips(blobs: ContentAddressedStore) -> None:
    table = pa.table({"a": [1, 2, None], "b": ["x", "y", "z"]},
                     metadata={b"source": b"test"})
    record = encode_output("t", table, blobs)
    assert record["kind"] == "arrow_table"
    back = decode_output(record, blobs)
    assert isinstance(back, pa.Table) and back.equals(table, check_metadata=True)


@pytest.mark.parametrize("array", [
    np.arange(12, dtype="float32").reshape(3, 4),
    np.array(3.5),
    np.array(["a", "bc"]),
    np.zeros(2, dtype=[("x", "i4"), ("y", "f8")]),
    np.array(["2024-01-01"], dtype="datetime64[D]"),
], ids=["2d", "0d", "unicode", "structured", "datetime"])
def test_an_ndarray_round_trips_with_its_dtype_and_shape(
        array: np.ndarray[Any, Any], blobs: ContentAddressedStore) -> None:
    record = encode_output("t", array, blobs)
    assert record["kind"] == "ndarray"
    back = decode_output(record, blobs)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_a_file_round_trips_as_a_read_only_copy_keeping_its_name(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"\x00weights" * 1000)
    record = encode_output("t", source, blobs)
    assert record["kind"] == "file" and record["name"] == "model.onnx"
    assert record["size"] == 8000 and blobs.get_bytes(record["digest"]) == source.read_bytes()
    copy = decode_output(record, blobs)
    assert isinstance(copy, Path) and copy != source and copy.name == "model.onnx"
    assert copy.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) & 0o222 == 0, "the copy must be read-only"
    assert decode_output(record, blobs) == copy, "this process's copy is reused"


def test_a_symlink_stores_its_target_s_bytes_under_the_link_s_name(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    target = tmp_path / "blob-v3.bin"
    target.write_bytes(b"target bytes")
    link = tmp_path / "latest.bin"
    link.symlink_to(target)
    record = encode_output("t", link, blobs)
    assert record["name"] == "latest.bin"
    assert decode_output(record, blobs).read_bytes() == b"target bytes"


# -- determinism --------------------------------------------------------------------------

def test_the_same_values_always_encode_to_the_same_bytes() -> None:
    assert TABLE.encode(_frame()) == TABLE.encode(_frame().copy())
    table = pa.table({"a": list(range(10))})
    rechunked = pa.concat_tables([table.slice(0, 3), table.slice(3)])
    assert ARROW_TABLE.encode(table) == ARROW_TABLE.encode(rechunked)
    array = np.arange(12).reshape(3, 4)
    assert NDARRAY.encode(array) == NDARRAY.encode(np.asfortranarray(array))


def test_the_same_data_gives_the_same_digest_and_content_hash(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    first = encode_output("a", _frame(), blobs)
    assert encode_output("b", _frame(), blobs) == first
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one" / "f.txt").write_text("same")
    (tmp_path / "two" / "f.txt").write_text("same")
    one, two = (encode_output("t", tmp_path / d / "f.txt", blobs) for d in ("one", "two"))
    assert content_hash(one) == content_hash(two)
    (tmp_path / "two" / "g.txt").write_text("same")
    renamed = encode_output("t", tmp_path / "two" / "g.txt", blobs)
    assert renamed["digest"] == one["digest"] and content_hash(renamed) != content_hash(one)


def test_the_content_hash_tells_kinds_with_the_same_bytes_apart() -> None:
    digest = "a" * 64
    hashes = {content_hash({"kind": kind, "digest": digest, "size": 1})
              for kind in ("bytes", "json_artifact", "table", "arrow_table", "ndarray")}
    assert len(hashes) == 5


def test_outputs_available_checks_a_data_output_s_digest(
        blobs: ContentAddressedStore) -> None:
    record = encode_output("t", np.arange(3), blobs)
    assert outputs_available(record, blobs)
    blobs.delete(record["digest"])
    assert not outputs_available(record, blobs)


# -- refusals -----------------------------------------------------------------------------

def test_an_object_array_is_refused_naming_the_task_output(
        blobs: ContentAddressedStore) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        encode_output("train", np.array([1, "a", None], dtype=object), blobs)
    assert caught.value.field == "task 'train' output"
    assert "object arrays cannot be stored without pickle" in caught.value.message
    with pytest.raises(InvalidArgumentError, match="object arrays"):
        encode_output("train", np.zeros(2, dtype=[("x", "i4"), ("o", "O")]), blobs)
    assert list(blobs.iter_objects()) == []


def test_a_masked_array_is_refused_rather_than_losing_its_mask(
        blobs: ContentAddressedStore) -> None:
    with pytest.raises(InvalidArgumentError, match="task 'm' output.*mask"):
        encode_output("m", np.ma.masked_array([1, 2], mask=[0, 1]), blobs)


def test_a_dataframe_arrow_cannot_type_is_refused_naming_the_task_output(
        blobs: ContentAddressedStore) -> None:
    with pytest.raises(InvalidArgumentError, match="task .f. output.*cannot be stored"):
        encode_output("f", pd.DataFrame({"o": [object()]}), blobs)
    with pytest.raises(InvalidArgumentError, match="task 'f' output.*Duplicate"):
        encode_output("f", pd.DataFrame([[1, 2]], columns=["a", "a"]), blobs)


def test_a_path_to_nothing_or_to_a_folder_is_refused_naming_the_task_output(
        tmp_path: Path, blobs: ContentAddressedStore) -> None:
    with pytest.raises(InvalidArgumentError, match="task 'w' output.*no file") as caught:
        encode_output("w", tmp_path / "missing.csv", blobs)
    assert caught.value.field == "task 'w' output"
    with pytest.raises(InvalidArgumentError, match="task 'w' output.*not a regular file"):
        encode_output("w", tmp_path, blobs)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    with pytest.raises(InvalidArgumentError, match="no file"):
        encode_output("w", dangling, blobs)
    to_folder = tmp_path / "to-folder"
    to_folder.symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(InvalidArgumentError, match="not a regular file"):
        encode_output("w", to_folder, blobs)


def test_other_objects_are_still_refused_naming_the_task(
        blobs: ContentAddressedStore) -> None:
    with pytest.raises(InvalidArgumentError, match="task 't' output.*store other objects"):
        encode_output("t", {1, 2}, blobs)


# -- decoding never unpickles -------------------------------------------------------------

def test_an_object_npy_is_refused_on_decode_and_never_unpickled(
        blobs: ContentAddressedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    info = blobs.put_bytes(buffer.getvalue())
    import pickle

    def no_pickle(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle must never be loaded")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    record = {"kind": "ndarray", "digest": info.digest, "size": info.size}
    with pytest.raises(IntegrityError, match="cannot be read.*allow_pickle=False"):
        decode_output(record, blobs)


def test_a_pickle_or_an_npz_stored_as_an_array_is_refused(
        blobs: ContentAddressedStore) -> None:
    import pickle

    buffer = io.BytesIO()
    np.savez(buffer, a=np.arange(3))
    for data in (pickle.dumps([1, 2]), buffer.getvalue()):
        info = blobs.put_bytes(data)
        with pytest.raises(IntegrityError):
            decode_output({"kind": "ndarray", "digest": info.digest}, blobs)


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "", None, "x\0y"])
def test_a_file_record_with_an_unsafe_name_is_refused(
        name: Any, tmp_path: Path, blobs: ContentAddressedStore) -> None:
    source = tmp_path / "ok.txt"
    source.write_text("data")
    record = {**encode_output("t", source, blobs), "name": name}
    with pytest.raises(IntegrityError, match="unsafe file name"):
        decode_output(record, blobs)


def test_a_data_record_with_a_malformed_digest_is_refused(
        blobs: ContentAddressedStore) -> None:
    for kind in ("file", "table"):
        with pytest.raises(IntegrityError, match="digest"):
            decode_output({"kind": kind, "digest": "../../etc", "name": "x"}, blobs)


def test_importing_the_pipeline_engine_does_not_import_pandas_or_pyarrow() -> None:
    code = ("import sys, loopline.pipelines.outputs, loopline.pipelines.plan, "
            "loopline.pipelines.runner; "
            "print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.stdout.strip() == "[]"


# -- return annotations, checked at plan time ---------------------------------------------

CALLS: list[str] = []


class SomeCustomClass:
    pass


class Scores(TypedDict):
    accuracy: float


@task
def numbers() -> list[int]:
    CALLS.append("numbers")
    return [1, 2]


@task
def unique(values: list[int]) -> set[int]:
    CALLS.append("unique")
    return set(values)


@task
def fit(values: list[int]) -> SomeCustomClass:
    CALLS.append("fit")
    return SomeCustomClass()


@task
def mystery(values: list[int]) -> UndefinedName:  # noqa: F821
    return values


@pipeline
def dedupe() -> Any:
    return unique(numbers())


@pipeline
def training() -> Any:
    data = numbers()
    return [fit(data), fit(data)]


@pipeline
def unresolvable() -> Any:
    return mystery(numbers())


def test_a_task_annotated_to_return_a_set_is_refused_before_anything_runs() -> None:
    CALLS.clear()
    with pytest.raises(InvalidArgumentError) as caught:
        build_plan(dedupe)
    assert caught.value.field == "task 'unique' output"
    assert "is annotated set[int], which a task cannot return" in caught.value.message
    assert CALLS == []


def test_a_task_annotated_to_return_a_custom_class_is_refused_naming_it() -> None:
    with pytest.raises(InvalidArgumentError, match="SomeCustomClass, which a task cannot") \
            as caught:
        build_plan(training)
    assert caught.value.field == "task 'fit' output"


def test_an_annotation_that_does_not_resolve_is_not_checked() -> None:
    assert build_plan(unresolvable).order == ("numbers", "mystery")


@pytest.mark.parametrize("hint", [
    int, float, str, bool, None, bytes, bytearray, Any, object, list[int], tuple[int, ...],
    dict[str, list[float]], dict[str, Any], Mapping[str, int], Sequence[float], int | None,
    str | bytes, pd.DataFrame, pd.DataFrame | None, pa.Table, np.ndarray,
    np.ndarray[Any, np.dtype[np.float64]], Path, Scores,
])
def test_storable_return_annotations_are_accepted(hint: Any) -> None:
    assert storable_annotation(hint)


@pytest.mark.parametrize("hint", [
    set, set[int], frozenset[str], SomeCustomClass, list[SomeCustomClass], int | SomeCustomClass,
    dict[tuple[int, int], float], list[pd.DataFrame], list[bytes], pd.Series,
])
def test_unstorable_return_annotations_are_refused(hint: Any) -> None:
    assert not storable_annotation(hint)
