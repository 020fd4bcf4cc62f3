"""Batch scoring on every backend: CSV/Parquet/snapshot in, Parquet/CSV out, in input order,
keep columns passed through, signature errors named by column and chunk with no output left,
bad paths and options refused, lineage recorded, the CLI, and one run on Ray."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from loopline.app import Workspace
from loopline.cli.main import run
from loopline.core.errors import (
    AlreadyExistsError,
    ConfigurationError,
    InvalidArgumentError,
    NotFoundError,
)
from loopline.registry.batch_input import rechunk
from loopline.registry.batch_scoring import ScoreOptions

URI = "models:/iris@champion"


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, LogisticRegression]:
    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, LogisticRegression(max_iter=1000).fit(X, y)


@pytest.fixture
def scored(ws: Workspace, iris: tuple[pd.DataFrame, LogisticRegression]) -> Iterator[Workspace]:
    """A workspace with the iris model registered (signature inferred) as iris@champion."""
    X, model = iris
    version = ws.models.register(model, "iris", input_example=X)
    ws.models.set_alias("iris", "champion", version.version)
    yield ws


@pytest.fixture
def rows(iris: tuple[pd.DataFrame, LogisticRegression]) -> pd.DataFrame:
    """The iris rows shuffled, with an id column first."""
    X, _ = iris
    shuffled = X.sample(frac=1.0, random_state=7).reset_index(drop=True)
    return pd.concat([pd.Series([f"r{i:03d}" for i in range(len(shuffled))], name="id"),
                      shuffled], axis=1)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("executor", ["inline", "thread"])
def test_parquet_input_scores_every_row_in_input_order_with_kept_ids(
        scored: Workspace, rows: pd.DataFrame, iris: tuple[pd.DataFrame, LogisticRegression],
        tmp_path: Path, executor: str) -> None:
    source, target = tmp_path / "in.parquet", tmp_path / "out" / "scores.parquet"
    target.parent.mkdir()
    rows.to_parquet(source, row_group_size=33)  # row groups that do not align with chunks
    seen: list[tuple[int, int | None]] = []
    report = scored.models.score(URI, str(source), target, ScoreOptions(
        executor=executor, chunk_rows=40, keep=("id",), workers=2,
        progress=lambda done, total: seen.append((done, total))))
    out = pq.read_table(target).to_pandas()
    expected = iris[1].predict(rows.drop(columns="id"))
    assert (report.rows, report.chunks, report.model_uri) == (150, 4, "models:/iris/1")
    assert list(out.columns) == ["id", "prediction"]
    assert out["id"].tolist() == rows["id"].tolist()
    np.testing.assert_array_equal(out["prediction"].to_numpy(), expected)
    assert seen == [(40, 150), (80, 150), (120, 150), (150, 150)]
    assert _files(target.parent) == ["scores.parquet"]  # no temporary file left


def test_csv_input_writes_csv_output_with_probabilities(
        scored: Workspace, rows: pd.DataFrame, iris: tuple[pd.DataFrame, LogisticRegression],
        tmp_path: Path) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "scores.csv"
    rows.to_csv(source, index=False)
    report = scored.models.score(URI, source, target, ScoreOptions(
        executor="thread", chunk_rows=64, keep=("id",), proba=True))
    out = pd.read_csv(target)
    model = iris[1]
    assert report.chunks == 3
    assert list(out.columns) == ["id", "prediction", "proba_0", "proba_1", "proba_2"]
    assert out["id"].tolist() == rows["id"].tolist()
    np.testing.assert_allclose(out[["proba_0", "proba_1", "proba_2"]].to_numpy(),
                               model.predict_proba(rows.drop(columns="id")), rtol=1e-9)


def test_snapshot_input_is_scored_and_recorded_in_lineage(
        scored: Workspace, rows: pd.DataFrame, tmp_path: Path) -> None:
    scored.datasets.snapshot(rows, "flowers")
    target = tmp_path / "scores.parquet"
    report = scored.models.score(URI, "dataset:flowers@1", target,
                                 ScoreOptions(keep=("id",)))
    assert report.rows == 150 and pq.read_table(target).num_rows == 150
    below = scored.lineage.downstream("dataset_snapshot:flowers@1")
    runs = [n for n in below.nodes if n.ref.kind == "custom.batch_score"]
    assert len(runs) == 1 and runs[0].attributes["rows"] == 150
    above = scored.lineage.upstream(f"source:{target}")
    assert {"model_version:iris@1", "dataset_snapshot:flowers@1"} <= {
        n.id for n in above.nodes}
    with pytest.raises(NotFoundError, match="flowers@2"):
        scored.models.score(URI, "dataset:flowers@2", tmp_path / "other.parquet")


def test_input_without_a_signature_column_is_refused_naming_it_and_leaves_no_output(
        scored: Workspace, rows: pd.DataFrame, tmp_path: Path) -> None:
    source, target = tmp_path / "in.parquet", tmp_path / "out" / "scores.parquet"
    target.parent.mkdir()
    rows.drop(columns="petal width (cm)").to_parquet(source)
    with pytest.raises(InvalidArgumentError, match=r"row 0 .*'petal width \(cm\)' is missing"):
        scored.models.score(URI, source, target, ScoreOptions(chunk_rows=50))
    assert _files(target.parent) == []


@pytest.mark.parametrize("executor", ["inline", "thread"])
def test_later_chunk_with_nulls_fails_naming_column_and_first_row_leaving_no_output(
        scored: Workspace, rows: pd.DataFrame, tmp_path: Path, executor: str) -> None:
    source, target = tmp_path / "in.parquet", tmp_path / "out" / "scores.parquet"
    target.parent.mkdir()
    broken = rows.copy()
    broken.loc[120, "sepal length (cm)"] = np.nan  # chunks 0..99 are written first
    broken.to_parquet(source)
    with pytest.raises(InvalidArgumentError) as refused:
        scored.models.score(URI, source, target, ScoreOptions(executor=executor,
                                                              chunk_rows=50))
    assert refused.value.field == "input"
    assert "chunk starting at row 100" in refused.value.problem
    assert "'sepal length (cm)' has 1 null values" in refused.value.problem
    assert _files(target.parent) == []


def test_values_outside_training_range_are_scored_and_reported_as_warnings(
        scored: Workspace, rows: pd.DataFrame, tmp_path: Path) -> None:
    odd = rows.copy()
    odd.loc[75, "petal length (cm)"] = 99.0
    report = scored.models.score(URI, odd, tmp_path / "s.parquet", ScoreOptions(chunk_rows=50))
    assert report.rows == 150
    assert report.warnings == ("column 'petal length (cm)': 1 values outside the range seen "
                               "in training (first in the chunk starting at row 50)",)


def test_bad_paths_are_refused_naming_the_field(
        scored: Workspace, rows: pd.DataFrame, tmp_path: Path) -> None:
    folder = tmp_path / "paths"
    folder.mkdir()
    rows.to_parquet(folder / "in.parquet")
    cases = [("missing.parquet", "out.parquet", "input"),
             ("in.parquet", "out.txt", "output"),
             ("in.parquet", "no-such-folder/out.parquet", "output"),
             ("in.parquet", "s3://bucket/out.parquet", "output"),
             ("in.parquet", ".", "output")]
    for source, output, field in cases:
        target = output if "://" in output else str(folder / output)
        with pytest.raises(InvalidArgumentError) as refused:
            scored.models.score(URI, str(folder / source), target)
        assert refused.value.field == field, (source, output)
    assert _files(folder) == ["in.parquet"]


def test_existing_output_is_kept_unless_overwrite_is_asked(
        scored: Workspace, rows: pd.DataFrame, tmp_path: Path) -> None:
    target = tmp_path / "scores.parquet"
    target.write_bytes(b"keep me")
    with pytest.raises(AlreadyExistsError):
        scored.models.score(URI, rows, target)
    assert target.read_bytes() == b"keep me"
    scored.models.score(URI, rows, target, ScoreOptions(overwrite=True))
    assert pq.read_table(target).num_rows == 150


def test_scoring_the_input_file_onto_itself_is_refused(
        scored: Workspace, rows: pd.DataFrame, tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    rows.to_parquet(source)
    with pytest.raises(InvalidArgumentError, match="is the input file"):
        scored.models.score(URI, source, source, ScoreOptions(overwrite=True))
    assert pq.read_table(source).num_rows == 150


def test_unknown_or_clashing_columns_are_refused(
        scored: Workspace, rows: pd.DataFrame, tmp_path: Path) -> None:
    frame = rows.assign(prediction=1)
    cases = [(ScoreOptions(keep=("nope",)), "keep"), (ScoreOptions(keep=("prediction",)), "keep"),
             (ScoreOptions(columns=("nope",)), "columns")]
    for options, field in cases:
        with pytest.raises(InvalidArgumentError) as refused:
            scored.models.score(URI, frame, tmp_path / "s.parquet", options)
        assert refused.value.field == field
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.parametrize(("options", "field"), [
    ({"executor": "process"}, "executor"),
    ({"chunk_rows": 0}, "chunk_rows"),
    ({"chunk_rows": True}, "chunk_rows"),
    ({"keep": ("id", "id")}, "keep"),
    ({"columns": ()}, "columns"),
])
def test_bad_options_are_refused_naming_the_option(options: dict[str, object],
                                                   field: str) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        ScoreOptions(**options)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_rechunk_cuts_uneven_batches_into_exact_chunks_in_order() -> None:
    batches = [pa.record_batch({"x": list(range(start, start + size))})
               for start, size in ((0, 7), (7, 0), (7, 13), (20, 5))]
    chunks = list(rechunk(batches, 10))
    assert [c.num_rows for c in chunks] == [10, 10, 5]
    assert pa.concat_tables(chunks).column("x").to_pylist() == list(range(25))


def test_cli_scores_with_the_workspace_and_exits_non_zero_on_bad_input(
        scored: Workspace, rows: pd.DataFrame, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "scores.parquet"
    rows.to_csv(source, index=False)
    base = ["--workspace", str(scored.root), "--db-url", scored.store.url, "score",
            "--model", URI, "--input", str(source), "--chunk-rows", "60"]
    with pytest.raises(SystemExit) as done:
        run([*base, "--output", str(target), "--keep", "id", "--json"])
    assert done.value.code == 0
    assert '"rows": 150' in capsys.readouterr().out
    assert pq.read_table(target).column("id").to_pylist() == rows["id"].tolist()
    with pytest.raises(SystemExit) as refused:
        run([*base, "--output", str(tmp_path / "x.parquet"), "--keep", "nope"])
    assert refused.value.code == 5
    assert "invalid keep" in capsys.readouterr().err


def test_ray_executor_without_ray_installed_is_a_configuration_error(
        scored: Workspace, rows: pd.DataFrame, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # ``import ray`` raises ImportError
    with pytest.raises(ConfigurationError, match=r"loopline\[ray\]"):
        scored.models.score(URI, rows, tmp_path / "s.parquet", ScoreOptions(executor="ray"))
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.ray
def test_ray_executor_scores_chunks_on_workers_in_input_order(
        ray_runtime: None, scored: Workspace, rows: pd.DataFrame,
        iris: tuple[pd.DataFrame, LogisticRegression], tmp_path: Path) -> None:
    source, target = tmp_path / "in.parquet", tmp_path / "scores.parquet"
    rows.to_parquet(source)
    report = scored.models.score(URI, source, target, ScoreOptions(
        executor="ray", chunk_rows=30, keep=("id",), proba=True))
    out = pq.read_table(target).to_pandas()
    assert report.chunks == 5
    assert out["id"].tolist() == rows["id"].tolist()
    np.testing.assert_array_equal(out["prediction"].to_numpy(),
                                  iris[1].predict(rows.drop(columns="id")))
    broken = rows.copy()
    broken.loc[100, "sepal width (cm)"] = np.nan
    with pytest.raises(InvalidArgumentError, match="row 90 .*'sepal width"):
        scored.models.score(URI, broken, tmp_path / "broken.parquet",
                            ScoreOptions(executor="ray", chunk_rows=30))
    assert not (tmp_path / "broken.parquet").exists()
