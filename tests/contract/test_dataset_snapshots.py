"""Dataset snapshots on every backend: identity is content, versions are per name, and bad
sources are refused with the field named and nothing written."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopline.app import Workspace
from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.data.diff import diff_versions


def frame(rows: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "sepal": rng.normal(5.8, 0.8, rows).round(3),
        "petals": rng.integers(0, 12, rows),
        "species": rng.choice(["setosa", "versicolor", "virginica"], rows),
        "seen": pd.date_range("2026-01-01", periods=rows, freq="h", tz="UTC"),
        "ok": rng.random(rows) > 0.3,
    })


def test_identity_is_stable_across_names_formats_and_row_groups(ws: Workspace,
                                                                 tmp_path: Path) -> None:
    data = frame()
    data.to_csv(tmp_path / "one.csv", index=False)
    data.to_parquet(tmp_path / "two.parquet", row_group_size=37)
    pq.write_table(pa.Table.from_pandas(data, preserve_index=False),
                   tmp_path / "three.parquet", row_group_size=499)
    first = ws.datasets.snapshot(data, "iris")
    others = [ws.datasets.snapshot(tmp_path / name, "iris")
              for name in ("two.parquet", "three.parquet")]
    assert first.created and not any(o.created for o in others)
    assert {o.version.content_hash for o in others} == {first.version.content_hash}
    # CSV parses timestamps and ints its own way; its identity is its own, but stable.
    csv_a = ws.datasets.snapshot(tmp_path / "one.csv", "iris_csv")
    (tmp_path / "renamed.csv").write_bytes((tmp_path / "one.csv").read_bytes())
    csv_b = ws.datasets.snapshot(tmp_path / "renamed.csv", "iris_csv")
    assert csv_b.version.id == csv_a.version.id and not csv_b.created


def test_one_changed_value_makes_a_new_version_with_a_diff(ws: Workspace) -> None:
    data = frame()
    first = ws.datasets.snapshot(data, "iris").version
    changed = data.copy()
    changed.loc[10, "sepal"] = 42.0
    second = ws.datasets.snapshot(changed, "iris", parents=["iris@1"]).version
    assert second.version == 2 and second.content_hash != first.content_hash
    assert second.parents == (first.id,)
    moved = diff_versions(first, second)
    assert any(c.column == "sepal" and c.statistic == "max" for c in moved.changes)
    assert not moved.added and not moved.removed


def test_snapshot_records_metadata_event_audit_and_lineage(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    frame().to_parquet(path)
    version = ws.datasets.snapshot(path, "iris").version
    assert version.rows == 500 and [c.name for c in version.columns][:2] == ["sepal", "petals"]
    assert version.source_uri == str(path) and version.source_hash is not None
    assert version.profile["columns"]["species"]["kind"] == "categorical"
    assert ws.datasets.read("iris", columns=["petals"]).num_rows == 500
    events = [e.type for e in ws.store.events.read_after(0)]
    assert "dataset.snapshot_created" in events
    assert ws.store.audit.entries()[0].action == "dataset.snapshot"
    upstream = ws.lineage.upstream("dataset_snapshot:iris@1")
    assert f"source:{path}" in {n.id for n in upstream.nodes}
    assert ws.store.audit.verify().ok


def test_references_resolve_by_name_version_latest_and_id(ws: Workspace) -> None:
    one = ws.datasets.snapshot(frame(seed=1), "iris").version
    two = ws.datasets.snapshot(frame(seed=2), "iris").version
    assert ws.datasets.get("iris").id == two.id
    assert ws.datasets.get("iris@latest").id == two.id
    assert ws.datasets.get("iris@1").id == one.id
    assert ws.datasets.get(one.id).id == one.id
    assert [v.ref for v in ws.datasets.versions("iris")] == ["iris@2", "iris@1"]
    with pytest.raises(NotFoundError, match="iris@9"):
        ws.datasets.get("iris@9")
    with pytest.raises(InvalidArgumentError, match="dataset"):
        ws.datasets.get("iris@zero")
    with pytest.raises(InvalidArgumentError, match="columns"):
        ws.datasets.read("iris", columns=["nope"])


@pytest.mark.parametrize(("content", "problem"), [
    (None, "no such file"),
    (b"", "empty"),
    (b"a,b\n1,2,3\n", "malformed CSV"),
    # past the first 4 MiB block, where the column type was already inferred as integer
    (b"a,b\n" + b"1,2\n" * 1_100_000 + b"x,2\n", "mixes types"),
    (b"a,b\n", "no rows"),
])
def test_bad_csv_sources_are_refused_and_nothing_is_written(
        ws: Workspace, tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidArgumentError, match=problem) as caught:
        ws.datasets.snapshot(path, "bad")
    assert caught.value.field == "source"
    assert ws.datasets.versions() == []
    assert list(ws.artifacts.list()) == []


def test_unreadable_parquet_and_other_bad_sources_are_refused(ws: Workspace,
                                                             tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InvalidArgumentError, match="unreadable Parquet"):
        ws.datasets.snapshot(broken, "bad")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidArgumentError, match="CSV"):
        ws.datasets.snapshot(tmp_path / "notes.txt", "bad")
    with pytest.raises(InvalidArgumentError, match="mixes types"):
        ws.datasets.snapshot(pd.DataFrame({"m": [1, "two", 3.0]}), "bad")
    with pytest.raises(InvalidArgumentError, match="cannot snapshot"):
        ws.datasets.snapshot(42, "bad")
    with pytest.raises(InvalidArgumentError, match="name"):
        ws.datasets.snapshot(frame(), "no spaces")
    with pytest.raises(NotFoundError):
        ws.datasets.snapshot(frame(), "ok", parents=["missing@1"])
    assert ws.datasets.versions() == []


def test_globs_read_every_matching_file_in_order(ws: Workspace, tmp_path: Path) -> None:
    data = frame(300)
    for index, part in enumerate((data[:100], data[100:200], data[200:])):
        part.to_parquet(tmp_path / f"part-{index}.parquet")
    whole = ws.datasets.snapshot(data, "parts").version
    globbed = ws.datasets.snapshot(str(tmp_path / "part-*.parquet"), "parts")
    assert globbed.version.id == whole.id and not globbed.created
    mismatched = tmp_path / "odd"
    mismatched.mkdir()
    data[:10].to_parquet(mismatched / "a.parquet")
    data[["sepal"]][:10].to_parquet(mismatched / "b.parquet")
    with pytest.raises(InvalidArgumentError, match="differ"):
        ws.datasets.snapshot(str(mismatched), "odd")


def test_partitions_append_and_windowed_reads(ws: Workspace) -> None:
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    times = [start + dt.timedelta(hours=h) for h in range(30)]
    table = pa.table({"at": pa.array(times, pa.timestamp("us", "UTC")), "v": list(range(30))})
    for offset in (0, 10, 20):
        ws.partitions.append("clicks", table.slice(offset, 10), time_column="at")
    from loopline.data.partitions import Window

    hours = ws.partitions.read("clicks", Window(start=times[8], end=times[12]))
    assert hours["v"].to_pylist() == [8, 9, 10, 11]
    assert ws.partitions.read("clicks", Window(last=12))["v"].to_pylist() == list(range(18, 30))
    assert ws.partitions.read("clicks").num_rows == 30
    assert [p.seq for p in ws.partitions.partitions("clicks")] == [1, 2, 3]
    with pytest.raises(InvalidArgumentError, match="time_column"):
        ws.partitions.append("clicks", table, time_column="v")
    with pytest.raises(InvalidArgumentError, match="differ"):
        ws.partitions.append("clicks", table.select(["v"]))
    with pytest.raises(InvalidArgumentError, match="start"):
        ws.partitions.read("clicks", Window(start=dt.datetime(2026, 3, 1)))  # noqa: DTZ001
    with pytest.raises(NotFoundError):
        ws.partitions.read("nothing-here")


@pytest.mark.parametrize(("before", "after"), [
    ({"x": [0.0, 1.0]}, {"x": [-0.0, 1.0]}),
    ({"x": pa.array([None], pa.int64())}, {"x": pa.array([7741216867112901387], pa.int64())}),
    ({"a": [1], "b": [2]}, {"a": [12345], "b": [694887826095424208]}),
    ({"s": ["ab", "c"]}, {"s": ["a", "bc"]}),
    ({"s": ["", None]}, {"s": [None, ""]}),
])
def test_values_that_differ_never_share_an_identity(
        ws: Workspace, before: dict[str, object], after: dict[str, object]) -> None:
    first = ws.datasets.snapshot(pa.table(before), "edge").version
    second = ws.datasets.snapshot(pa.table(after), "edge")
    assert second.created and second.version.content_hash != first.content_hash


def test_going_back_to_older_rows_is_a_new_latest_version(ws: Workspace) -> None:
    a, b = frame(50, seed=1), frame(50, seed=2)
    ws.datasets.snapshot(a, "rev")
    ws.datasets.snapshot(b, "rev")
    back = ws.datasets.snapshot(a, "rev")
    assert back.created and back.version.version == 3
    assert ws.datasets.get("rev").content_hash == ws.datasets.get("rev@1").content_hash
    derived = ws.datasets.snapshot(a, "rev", parents=["rev@2"])
    assert derived.created and derived.version.parents == (ws.datasets.get("rev@2").id,)


def test_csv_timestamps_append_again_and_round_trip_to_the_same_identity(
        ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "p1.csv").write_text("t,v\n2026-01-01T00:00:00Z,1\n2026-01-01T01:00:00Z,2\n")
    (tmp_path / "p2.csv").write_text("t,v\n2026-01-01T02:00:00Z,3\n")
    ws.partitions.append("ev", tmp_path / "p1.csv", time_column="t")
    ws.partitions.append("ev", tmp_path / "p2.csv", time_column="t")
    ws.partitions.append("ev", tmp_path / "p1.csv", time_column="t")
    from loopline.data.partitions import Window

    plus_two = dt.timezone(dt.timedelta(hours=2))
    window = Window(start=dt.datetime(2026, 1, 1, 3, tzinfo=plus_two),
                    end=dt.datetime(2026, 1, 1, 4, tzinfo=plus_two))
    # [01:00Z, 02:00Z): the end is exclusive, so the 02:00Z row of p2 is outside
    assert sorted(ws.partitions.read("ev", window)["v"].to_pylist()) == [2, 2]
    empty = ws.partitions.read("ev", Window(start=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)))
    assert empty.num_rows == 0 and empty.column_names == ["t", "v"]
    first = ws.datasets.snapshot(tmp_path / "p1.csv", "ts").version
    pq.write_table(ws.datasets.read("ts"), tmp_path / "exported.parquet")
    again = ws.datasets.snapshot(tmp_path / "exported.parquet", "ts")
    assert not again.created and again.version.id == first.id
    assert dict((c.name, c.type) for c in first.columns)["t"] == "timestamp[us, tz=UTC]"


def test_infinite_values_are_kept_and_stored_on_every_backend(ws: Workspace) -> None:
    version = ws.datasets.snapshot(pa.table({"f": [1.0, float("inf"), -2.0]}), "inf").version
    assert version.profile["columns"]["f"]["max"] == "inf"
    assert ws.datasets.read("inf")["f"].to_pylist() == [1.0, float("inf"), -2.0]


def test_a_corrupt_gzip_and_credentials_in_a_url_are_handled(ws: Workspace,
                                                            tmp_path: Path) -> None:
    (tmp_path / "bad.csv.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(InvalidArgumentError, match="source"):
        ws.datasets.snapshot(tmp_path / "bad.csv.gz", "gz")
    import fsspec

    with fsspec.open("memory://user:secret@bucket/creds.csv", "w") as handle:
        handle.write("a,b\n1,2\n")
    version = ws.datasets.snapshot("memory://user:secret@bucket/creds.csv", "creds").version
    assert "secret" not in (version.source_uri or "")
    assert all("secret" not in str(e.payload) for e in ws.store.events.read_after(0))
    with pytest.raises(InvalidArgumentError) as missing:
        ws.datasets.snapshot("memory://user:secret@bucket/none.csv", "creds")
    assert "secret" not in str(missing.value)


def test_a_suite_naming_an_unknown_column_is_refused_before_it_runs(ws: Workspace) -> None:
    from loopline.data.validation import Suite

    ws.datasets.snapshot(frame(50), "checked")
    suite = Suite.from_yaml("name: s\nexpectations:\n  - {type: column_exists, column: sepal}\n"
                            "  - {type: values_between, column: petal_width, min: 0}\n")
    with pytest.raises(InvalidArgumentError, match=r"expectations\[1\]\.column"):
        ws.validate_dataset("checked", suite)
    assert ws.validation.history(ws.datasets.get("checked").id) == []


def test_validation_reads_only_the_columns_its_suite_names(ws: Workspace) -> None:
    from loopline.data.validation import Suite

    ws.datasets.snapshot(frame(80), "narrow")
    rows_only = Suite.from_yaml("name: r\nexpectations:\n  - {type: row_count_between, min: 80,"
                                " max: 80}\n  - {type: column_exists, column: nowhere}\n")
    assert rows_only.columns_read() == ["nowhere"]
    report = ws.validate_dataset("narrow", rows_only)
    assert [r.passed for r in report.results] == [True, False]
