"""Benchmark the model registry (register, resolve, load, verify) against raw skops in one run.

Prints one JSON document on stdout (progress goes to stderr). Two seeded models, an iris
``Pipeline(StandardScaler, LogisticRegression)`` and a ``RandomForestClassifier`` on a
``make_classification`` table, each in a fresh workspace on SQLite and, when a URL is given,
PostgreSQL (in a private schema ``lb_<hex>``, dropped afterwards):

    register   ``ws.models.register(model, name, input_example=...)`` of successive versions,
               interleaved with raw ``skops.io.dumps`` (bytes in memory) and raw dumps written
               to a new file with the file and its folder fsynced
    resolve    ``ws.models.resolve("models:/NAME@champion")``; nothing in skops compares
    load       ``ws.models.load("models:/NAME@champion")``, interleaved with raw
               ``skops.io.loads`` of the same bytes, trusting the types skops reports
    verify     ``ws.models.verify(uri)`` (a fresh Python process scores the recorded sample),
               against a bare fresh interpreter importing sklearn and skops (the floor of any
               fresh-process check) and an in-process raw load + predict

Every version differs from the previous one in a harmless attribute (``bench_round_``), so
each registration stores new artifact bytes as a retrained model would; identical bytes
would be deduplicated by the content-addressed store and skip the fsync. Ratios are
loopline's median time / the baseline's median time from the same run: 1.0 is as fast,
higher is slower. Nothing here asserts a timing.

Run ``make bench`` or ``.venv/bin/python benchmarks/registry.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import skops
import skops.io
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bench_common import (
    add_common_arguments,
    check,
    elapsed,
    machine,
    max_rss_mib,
    measure,
    on_postgres,
    progress,
    public_settings,
    ratio,
    scratch,
    summary,
)
from loopline.app import Workspace
from loopline.core.models import ModelVersion
from loopline.data.provenance import code_version

ALIAS = "champion"
EXAMPLE_ROWS = 50  # the input example: it types the signature and is the sample verify scores
FLOOR_CODE = "import sklearn, skops.io"
DEFAULTS: dict[str, Any] = {"repeat": 30, "resolve_repeat": 200, "verify_repeat": 3,
                            "rows": 5000, "features": 20, "trees": 100}
QUICK: dict[str, Any] = {"repeat": 5, "resolve_repeat": 50, "verify_repeat": 1,
                         "rows": 1000, "features": 20, "trees": 10}
RATIO_NOTE = ("ratios are loopline median time / baseline median time from the same run "
              "(1.0 = as fast, higher is slower); median_ms is the p50")


@dataclass(frozen=True, slots=True)
class Settings:
    """How many repetitions and how big a forest."""

    repeat: int
    resolve_repeat: int
    verify_repeat: int
    rows: int
    features: int
    trees: int
    seed: int
    postgres_url: str | None
    tmpdir: str | None
    quick: bool


@dataclass(frozen=True, slots=True)
class Subject:
    """One fitted model to register, with the rows it is checked and verified on."""

    key: str
    name: str
    description: str
    model: Any
    example: pd.DataFrame
    train_rows: int


# -- the models ----------------------------------------------------------------------------


def iris_subject(seed: int) -> Subject:
    """Return a scaler + logistic regression fitted on iris (shipped with scikit-learn)."""
    features, target = load_iris(return_X_y=True, as_frame=True)
    model = Pipeline([("scale", StandardScaler()),
                      ("logreg", LogisticRegression(max_iter=1000, random_state=seed))])
    model.fit(features, target)
    return Subject("iris_logreg", "bench-iris", "Pipeline(StandardScaler, LogisticRegression)",
                   model, features.sample(EXAMPLE_ROWS, random_state=seed), len(features))


def forest_subject(settings: Settings) -> Subject:
    """Return a random forest fitted on a seeded ``make_classification`` table."""
    values, target = make_classification(n_samples=settings.rows,
                                         n_features=settings.features,
                                         n_informative=max(2, settings.features // 2),
                                         random_state=settings.seed)
    features = pd.DataFrame(values, columns=[f"f{i:02d}" for i in range(settings.features)])
    model = RandomForestClassifier(n_estimators=settings.trees, random_state=settings.seed)
    model.fit(features, target)
    return Subject("random_forest", "bench-forest",
                   f"RandomForestClassifier(n_estimators={settings.trees})", model,
                   features.sample(EXAMPLE_ROWS, random_state=settings.seed), settings.rows)


# -- raw skops baselines -------------------------------------------------------------------


def dumps_fsync(model: Any, path: Path) -> int:
    """Dump ``model`` with skops into a new file; fsync the file and its folder."""
    data = skops.io.dumps(model)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return len(data)


def load_predict(data: bytes, trusted: list[str], example: pd.DataFrame) -> Any:
    """Load the archive with skops and score the example: verification without a process."""
    return skops.io.loads(data, trusted=trusted).predict(example)


def fresh_process_floor(runs: int) -> list[float]:
    """Time a bare interpreter importing sklearn and skops ``runs`` times; return seconds."""
    seconds = []
    for _ in range(runs):
        done, took = measure(lambda: subprocess.run([sys.executable, "-c", FLOOR_CODE],
                                                    capture_output=True, check=False))
        check(done.returncode == 0, f"the bare interpreter failed: {done.stderr[-500:]!r}")
        seconds.append(took)
    return seconds


# -- loopline, phase by phase --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bench:
    """What the phases of one subject on one backend share."""

    ws: Workspace
    subject: Subject
    settings: Settings
    folder: Path

    @property
    def uri(self) -> str:
        """The alias URI that resolve, load and verify name."""
        return f"models:/{self.subject.name}@{ALIAS}"


def register_once(bench: Bench, number: int) -> ModelVersion:
    """Register the subject's model, marked with ``number``, as the next version."""
    model = bench.subject.model
    model.bench_round_ = number  # new bytes per version, the predictions unchanged
    return bench.ws.models.register(model, bench.subject.name, input_example=bench.subject.example,
                                    tags={"benchmark": "registry"})


def register_phase(bench: Bench) -> tuple[dict[str, Any], ModelVersion]:
    """Time successive registrations interleaved with raw dumps; return figures, last version."""
    first, first_s = measure(lambda: register_once(bench, 0))  # imports, caches, git state
    times: dict[str, list[float]] = {"register": [], "raw_dumps": [], "raw_dumps_fsync": []}
    model = bench.subject.model
    last = first
    for number in range(1, bench.settings.repeat + 1):
        last, took = measure(partial(register_once, bench, number))
        times["register"].append(took)
        _, took = measure(lambda: skops.io.dumps(model))
        times["raw_dumps"].append(took)
        path = bench.folder / f"raw-{number}.skops"
        _, took = measure(partial(dumps_fsync, model, path))
        times["raw_dumps_fsync"].append(took)
        path.unlink()
    numbers = [v.version for v in bench.ws.models.versions(bench.subject.name)]
    check(numbers == list(range(1, bench.settings.repeat + 2)), f"versions {numbers}")
    digests = {v.artifact_digest for v in bench.ws.models.versions(bench.subject.name)}
    check(len(digests) == len(numbers), "every version should store distinct artifact bytes")
    return {"versions": len(numbers), "first_register_ms": round(first_s * 1000, 3),
            **{name: summary(values) for name, values in times.items()}}, last


def resolve_phase(bench: Bench, last: ModelVersion) -> dict[str, Any]:
    """Point the alias at the last version once, then time resolving it."""
    bench.ws.models.set_alias(bench.subject.name, ALIAS, last.version)
    times = []
    for _ in range(bench.settings.resolve_repeat):
        found, took = measure(lambda: bench.ws.models.resolve(bench.uri))
        times.append(took)
    check(found.version == last.version, f"{bench.uri} resolved to {found.version}")
    return {"runs": len(times), **summary(times)}


def load_phase(bench: Bench, data: bytes, trusted: list[str]) -> dict[str, Any]:
    """Time loading the alias interleaved with raw ``skops.io.loads`` of the same bytes."""
    example = bench.subject.example
    expected = bench.subject.model.predict(example)
    loaded = bench.ws.models.load(bench.uri)  # warm: the flavor's first-use imports
    check(np.array_equal(loaded.predict(example), expected), "loaded model predicts otherwise")
    times: dict[str, list[float]] = {"load": [], "raw_loads": []}
    for _ in range(bench.settings.repeat):
        _, took = measure(lambda: bench.ws.models.load(bench.uri))
        times["load"].append(took)
        raw, took = measure(lambda: skops.io.loads(data, trusted=trusted))
        times["raw_loads"].append(took)
    check(np.array_equal(raw.predict(example), expected), "raw skops model predicts otherwise")
    return {"runs": bench.settings.repeat, **{k: summary(v) for k, v in times.items()}}


def verify_phase(bench: Bench, data: bytes, trusted: list[str]) -> dict[str, Any]:
    """Time ``ws.models.verify`` interleaved with an in-process raw load + predict."""
    times: dict[str, list[float]] = {"verify": [], "raw_load_predict": []}
    worker: dict[str, list[float]] = {"load": [], "score": []}
    example = bench.subject.example
    for _ in range(bench.settings.verify_repeat):
        report, took = measure(lambda: bench.ws.models.verify(bench.uri))
        check(report.passed, f"verify of {bench.uri} failed: {report.reasons}")
        times["verify"].append(took)
        for stage, values in worker.items():  # what the fresh process itself timed
            values.append(float(report.worker["seconds"][stage]))
        _, took = measure(lambda: load_predict(data, trusted, example))
        times["raw_load_predict"].append(took)
    return {"runs": bench.settings.verify_repeat, "checks": len(report.checks),
            "worker_median_ms": {stage: summary(values)["median_ms"]
                                 for stage, values in worker.items()},
            **{k: summary(v) for k, v in times.items()}}


# -- one subject on one backend ------------------------------------------------------------


def figures(register: dict[str, Any], resolve: dict[str, Any], load: dict[str, Any],
            verify: dict[str, Any], floor_ms: float) -> dict[str, Any]:
    """Arrange one backend's measurements as loopline figures, baselines and ratios."""
    timed = ((register, ("register", "raw_dumps", "raw_dumps_fsync")),
             (load, ("load", "raw_loads")), (verify, ("verify", "raw_load_predict")))
    p50 = {name: section[name]["median_ms"] for section, names in timed for name in names}
    return {
        "versions_registered": register["versions"],
        "register": {"first_ms": register["first_register_ms"], **register["register"]},
        "resolve": resolve,
        "load": {"runs": load["runs"], **load["load"]},
        "verify": {"runs": verify["runs"], "checks": verify["checks"], **verify["verify"],
                   "worker_median_ms": verify["worker_median_ms"]},
        "baseline": {"raw_dumps": register["raw_dumps"],
                     "raw_dumps_fsync": register["raw_dumps_fsync"],
                     "raw_loads": load["raw_loads"],
                     "raw_load_predict": verify["raw_load_predict"]},
        "ratios": {"register_vs_raw_dumps": ratio(p50["register"], p50["raw_dumps"]),
                   "register_vs_raw_dumps_fsync": ratio(p50["register"],
                                                        p50["raw_dumps_fsync"]),
                   "load_vs_raw_loads": ratio(p50["load"], p50["raw_loads"]),
                   "verify_vs_fresh_process_floor": ratio(p50["verify"], floor_ms),
                   "verify_vs_raw_load_predict": ratio(p50["verify"],
                                                       p50["raw_load_predict"])},
    }


def bench_subject(subject: Subject, settings: Settings, work: Path, url: str | None,
                  floor_ms: float) -> dict[str, Any]:
    """Measure one model in a fresh workspace (SQLite, or PostgreSQL at ``url``)."""
    with scratch(work, subject.key) as folder:
        ws = Workspace.init(folder / "ws", overrides={"db_url": url} if url else None)
        try:
            bench = Bench(ws, subject, settings, folder)
            label = f"{subject.key}/{ws.store.backend}"
            progress(f"{label}: {settings.repeat + 1} registrations and raw dumps")
            register, last = register_phase(bench)
            progress(f"{label}: {settings.resolve_repeat} resolves of {bench.uri}")
            resolve = resolve_phase(bench, last)
            data = ws.artifacts.get_bytes(last.artifact_digest)
            trusted = skops.io.get_untrusted_types(data=data)
            progress(f"{label}: {settings.repeat} loads and raw loads")
            load = load_phase(bench, data, trusted)
            progress(f"{label}: {settings.verify_repeat} verifications (fresh processes)")
            verify = verify_phase(bench, data, trusted)
            backend = ws.store.backend
        finally:
            ws.close()
    return {"backend": backend, "artifact_bytes": len(data),
            **figures(register, resolve, load, verify, floor_ms)}


def describe(subject: Subject) -> dict[str, Any]:
    """Return what a subject is and the sizes of its raw and stored archives."""
    raw = skops.io.dumps(subject.model)
    return {"model": subject.description, "registered_as": subject.name,
            "train_rows": subject.train_rows, "features": subject.example.shape[1],
            "example_rows": len(subject.example), "raw_skops_bytes": len(raw),
            "untrusted_types_skops_reports": sorted(skops.io.get_untrusted_types(data=raw))}


# -- command line --------------------------------------------------------------------------


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Parse the command line; ``--quick`` shrinks repetitions and the forest's table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, help="registrations and loads per model (30)")
    parser.add_argument("--resolve-repeat", type=int, help="alias resolves per model (200)")
    parser.add_argument("--verify-repeat", type=int, help="verifications per model (3)")
    parser.add_argument("--rows", type=int, help="rows of the forest's table (5000)")
    parser.add_argument("--features", type=int, help="features of the forest's table (20)")
    parser.add_argument("--trees", type=int, help="trees in the forest (100)")
    add_common_arguments(parser, "folder for temporary files (default: system temp)")
    parser.add_argument("--quick", action="store_true",
                        help="few repetitions, a 10-tree forest on 1000 rows: for a smoke test")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    sizes = {name: getattr(args, name) if getattr(args, name) is not None else default
             for name, default in base.items()}
    if any(value < 1 for value in sizes.values()) or sizes["features"] < 2:
        parser.error("counts must be at least 1 and --features at least 2")
    return Settings(**sizes, seed=args.seed, quick=args.quick, tmpdir=args.tmpdir,
                    postgres_url=None if args.no_postgres else args.postgres_url)


def main(argv: list[str] | None = None) -> int:
    """Measure each model on each backend, print the JSON report; exit 1 on a PG error."""
    settings = parse_settings(argv)
    progress(f"fitting the models (seed {settings.seed})")
    subjects = [iris_subject(settings.seed), forest_subject(settings)]
    progress(f"fresh-process floor: {settings.verify_repeat} bare interpreters")
    floor = summary(fresh_process_floor(settings.verify_repeat))
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="loopline-bench-", dir=settings.tmpdir) as tmp:
        work = Path(tmp)
        for subject in subjects:
            def run(url: str | None, s: Subject = subject) -> dict[str, Any]:
                return bench_subject(s, settings, work, url, floor["median_ms"])

            models[subject.key] = {**describe(subject), "sqlite": run(None),
                                   "postgresql": on_postgres(settings.postgres_url, run)}
    shown = public_settings(settings)
    report = {
        "benchmark": "loopline model registry",
        "machine": machine(scikit_learn=sklearn.__version__, skops=skops.__version__),
        "settings": {**shown, "example_rows": EXAMPLE_ROWS, "alias": ALIAS},
        "registration_git_state": {"folder": str(Path.cwd()),  # each register reads it
                                   "git_work_tree": code_version().repo is not None},
        "note": RATIO_NOTE,
        "fresh_process_floor": {"command": f"{Path(sys.executable).name} -c '{FLOOR_CODE}'",
                                "runs": settings.verify_repeat, **floor},
        "models": models,
        "process_max_rss_mib": max_rss_mib(),
        "elapsed_s": elapsed(),
    }
    print(json.dumps(report, indent=2))
    progress("done")
    return 1 if any("error" in m["postgresql"] for m in models.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
