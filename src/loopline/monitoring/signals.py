"""Measuring a rule's signal over a window, from the prediction log, references and stats.

``SignalMeasurer`` is the evaluator's ``Measurer``:

- drift (``dataset_drift``, ``column_drift``, ``prediction_drift``): the window's logged
  requests are read segment by segment (``PredictionLog.read_segments``), expanded
  ``BATCH_REQUESTS`` requests at a time to one row per scored row
  (``window_rows.expand_predictions``) and profiled per serving version against its
  reference (``window_profiles.WindowProfiler``), holding one batch of rows at a time; the
  profiles are compared with the reference (``drift.dataset_drift`` on the inputs: the value
  is the share of columns that drifted; ``drift.column_drift`` on one input column or on the
  outputs: the value is the score). A column of another kind in the window than in the
  reference is skipped with the reason.
- ``quality`` and ``label_share``: the window read with its feedback labels, scored by
  ``quality.quality_report`` (overall or on the rule's slice) against the version's training
  metrics: the value is the metric, or with ``baseline: training`` its drop (positive is
  worse); samples are the labelled rows for quality and all rows for the label share.
  Labels timed after the evaluation (``as_of``) are left out, so a re-run agrees. The
  window is read whole (the labels are joined to it) and expanded once, building only the
  input columns the config's slices name.
- ``error_rate``, ``latency`` (p50/p95/p99 in ms) and ``throughput``: the servers' stats
  (``health.health``); samples are requests. Throughput is requests per second of the
  window, 0.0 when nothing was served (no stats at all); the evaluator does not hold it to
  ``min_samples``.

A rule that names no version judges each version served in the window on its own and
reports the worst (the highest value for ``above`` rules, the lowest for ``below``) among
those with enough samples; every version's numbers are kept under ``versions`` and the worst
one's URI as ``model_version``. Throughput is the exception: a canary's share of the traffic
is not a fault, so it is measured for the deployment as a whole. A version without a
reference profile (or a training value, for a baseline) has no value; the reason is kept.

Within one ``Evaluator.run`` (``MeasureTask.cache``), what is read for a window is kept and
shared by the run's rules: the drift profiles per (deployment, version scope, window), the
labelled rows per (deployment, version scope, window, as-of), and each version's reference;
rules on the same window read the log once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import pyarrow as pa
import pyarrow.compute as pc

from loopline.core.errors import BackendError, InvalidArgumentError, NotFoundError
from loopline.core.models import MODELS_SCHEME, ModelURI, version_uri
from loopline.core.monitoring import AlertRule, Comparison, Measurement, SignalKind
from loopline.core.predictions import LOG_NAME_LIMIT, PredictionWindow, log_name_of
from loopline.data.column_profile import ColumnProfile
from loopline.data.prediction_log import ReadOptions
from loopline.data.profiling import Profile
from loopline.monitoring.config_yaml import PREDICTION_COLUMN
from loopline.monitoring.drift import column_drift, dataset_drift
from loopline.monitoring.health import health
from loopline.monitoring.quality import quality_report
from loopline.monitoring.window_profiles import WindowProfile, WindowProfiler
from loopline.monitoring.window_rows import MODEL_VERSION, expand_predictions
from loopline.monitoring.windows import MeasureTask
from loopline.store import MetadataStore
from loopline.store.deployment_queries import DeploymentQueries

__all__ = ["BATCH_REQUESTS", "LOG_NAME_LIMIT", "PredictionReader", "ReferenceLike",
           "ReferenceSource", "SignalMeasurer", "log_name", "version_of_log_name"]

BATCH_REQUESTS = 8_192
"""Logged requests expanded and profiled at a time by the drift signals."""
MAX_HISTORY = 1000  # revisions looked through for a cut log name
_DRIFT = frozenset({SignalKind.DATASET_DRIFT, SignalKind.COLUMN_DRIFT,
                    SignalKind.PREDICTION_DRIFT})
_QUALITY = frozenset({SignalKind.QUALITY, SignalKind.LABEL_SHARE})
_HEALTH_VALUES = {SignalKind.ERROR_RATE: "error_rate", SignalKind.THROUGHPUT: "throughput"}


class PredictionReader(Protocol):
    """Reads the prediction log (``data.prediction_log.PredictionLog``)."""

    def read(self, window: PredictionWindow | None = None,
             options: ReadOptions | None = None) -> pa.Table:
        """Return the predictions inside ``window``."""
        ...

    def read_segments(self, window: PredictionWindow | None = None) -> Iterator[pa.Table]:
        """Yield the predictions inside ``window`` a segment at a time (no feedback)."""
        ...


class ReferenceLike(Protocol):
    """A version's reference: its training inputs' and outputs' profiles, its metrics."""

    @property
    def inputs(self) -> Profile:
        """The profile of the training inputs."""
        ...

    @property
    def outputs(self) -> Profile | None:
        """The profile of the training outputs, if stored."""
        ...

    @property
    def metrics(self) -> Mapping[str, Any]:
        """The version's training metrics (per slice where registered so)."""
        ...


class ReferenceSource(Protocol):
    """Finds a version's reference (``references.ReferenceProfiles``)."""

    def reference_of(self, model: str, version: int) -> ReferenceLike | None:
        """Return the reference of ``model`` version ``version``, or None."""
        ...


def log_name(uri: str) -> str:
    """Return the prediction log's name for a version URI: ``MODEL.vVERSION``.

    The rule the server writes by (``core.predictions.log_name_of``): a model name too long
    for the log's 128 characters is cut and given a short hash of the whole name.

    Raises:
        InvalidArgumentError: naming ``model`` when ``uri`` names no version.
    """
    parsed = ModelURI.parse(uri)
    if parsed.version is None:
        raise InvalidArgumentError("model", f"{uri!r} names an alias, not a version")
    return log_name_of(parsed.name, parsed.version)


def version_of_log_name(name: str) -> ModelURI | None:
    """Return the version a log name stands for, or None when it cannot be told from it.

    A name of the full 128 characters may be a cut one (see ``log_name``), whose model's
    whole name is not in it: that is None too (``SignalMeasurer`` looks such names up
    among the versions the deployment has routed to).
    """
    model, dot_v, number = name.rpartition(".v")
    if len(name) >= LOG_NAME_LIMIT or not dot_v or not number.isdigit():
        return None
    try:
        return ModelURI.parse(f"{MODELS_SCHEME}{model}/{int(number)}")
    except InvalidArgumentError:
        return None


@dataclass(frozen=True, slots=True)
class _Served:
    """The rows one version served in the window, and what it is called."""

    key: str  # the URI, or the log name when that cannot be read back
    uri: ModelURI | None
    rows: pa.Table


def _by_version(rows: pa.Table, routed: Callable[[], Mapping[str, ModelURI]]) -> list[_Served]:
    names = sorted(str(value) for value in pc.unique(rows[MODEL_VERSION]).to_pylist())
    served = []
    for name in names:
        uri = version_of_log_name(name)
        if uri is None and len(name) >= LOG_NAME_LIMIT:
            uri = routed().get(name)
        part = rows.filter(pc.equal(rows[MODEL_VERSION], name))
        served.append(_Served(str(uri) if uri is not None else name, uri, part))
    return served


def _worst(rule: AlertRule, per: Mapping[str, Measurement]) -> Measurement:
    """Return the worst judged version's measurement, keeping every version's numbers."""
    if not per:
        return Measurement(None, 0, {"reason": "nothing was served in the window"})
    valued = {key: m for key, m in per.items() if m.value is not None}
    judged = {key: m for key, m in valued.items() if m.samples >= rule.min_samples}
    pool = judged or valued
    if pool:
        pick = max if rule.comparison is Comparison.ABOVE else min
        key = pick(pool, key=lambda name: float(pool[name].value or 0.0))
    else:
        key = max(per, key=lambda name: per[name].samples)
    chosen = per[key]
    versions = {name: {"value": m.value, "samples": m.samples, **m.numbers}
                for name, m in per.items()}
    return Measurement(chosen.value, chosen.samples, {"model_version": key,
                                                      "versions": versions})


def _without_late_labels(table: pa.Table, task: MeasureTask) -> pa.Table:
    """Drop labels timed after ``task.as_of``: the evaluation did not know them."""
    if "label_time" not in table.column_names or table.num_rows == 0:
        return table
    late = pc.fill_null(pc.greater(table["label_time"], pa.scalar(task.as_of,
                                                                   table["label_time"].type)),
                        False)
    for name in ("label", "label_time"):
        index = table.column_names.index(name)
        column = table[name]
        table = table.set_column(index, name, pc.if_else(late, pa.nulls(1, column.type)[0],
                                                         column))
    return table


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Failed:
    """A memoised failure: the run's other rules on the window get the same error."""

    error: Exception


def _memo(task: MeasureTask, key: Hashable, make: Callable[[], T]) -> T:
    """Return ``make()``, computed once per run for ``key`` (a failure too, but a backend's)."""
    cache = task.cache
    if cache is None:
        return make()
    if key not in cache:
        try:
            cache[key] = make()
        except BackendError:
            raise
        except Exception as exc:
            cache[key] = _Failed(exc)
            raise
    found = cache[key]
    if isinstance(found, _Failed):
        raise found.error
    return cast(T, found)


def _window_key(task: MeasureTask) -> tuple[Hashable, ...]:
    scope = task.rule.scope
    return scope.deployment, scope.model_version, task.start, task.end


class _Profiled:
    """One version's rows of a window, as its drift needs them: a count and the profiles."""

    def __init__(self, key: str, reference: ReferenceLike | None) -> None:
        self.key = key
        self.reference = reference
        self.rows = 0
        self.profiler = None if reference is None else WindowProfiler(reference.inputs,
                                                                       reference.outputs)
        self._profile: WindowProfile | None = None

    def add(self, rows: pa.Table) -> None:
        self.rows += rows.num_rows
        if self.profiler is not None:
            self.profiler.update(rows)

    def profile(self) -> WindowProfile | None:
        if self._profile is None and self.profiler is not None:
            self._profile = self.profiler.result()
        return self._profile


class SignalMeasurer:
    """Measures every ``SignalKind`` (see the module docstring)."""

    def __init__(self, predictions: PredictionReader, references: ReferenceSource,
                 store: MetadataStore) -> None:
        self._predictions = predictions
        self._references = references
        self._store = store

    def measure(self, task: MeasureTask) -> Measurement:
        """Return what ``task.rule``'s signal measured over the task's window.

        Raises:
            InvalidArgumentError: when the logged requests or labels cannot be read as rows
                (the evaluator records the message).
        """
        signal = task.rule.signal
        if signal in _DRIFT:
            profiled = _memo(task, ("drift", *_window_key(task)), lambda: self._profile(task))
            per = {key: _drift(task, part) for key, part in profiled.items()}
        elif signal in _QUALITY:
            keep = tuple(sorted({column for spec in task.slices.values()
                                 for column in spec.where}))
            served = _memo(task, ("quality", *_window_key(task), task.as_of, keep),
                           lambda: self._labelled(task, keep))
            per = {part.key: self._quality(task, part) for part in served}
        else:
            return self._health(task)
        if not per:
            return Measurement(None, 0, {"reason": "no predictions in the window"})
        return _worst(task.rule, per)

    # ------------------------------------------------------------------ the log's signals

    def _log_window(self, task: MeasureTask) -> PredictionWindow:
        scope = task.rule.scope
        return PredictionWindow(
            deployment=scope.deployment, start=task.start, end=task.end,
            model_version=None if scope.model_version is None else log_name(scope.model_version))

    def _profile(self, task: MeasureTask) -> dict[str, _Profiled]:
        """Profile the window's rows per version, a batch of requests at a time."""
        found: dict[str, _Profiled] = {}
        routed = _Routed(self, task.rule.scope.deployment)
        for part in self._predictions.read_segments(self._log_window(task)):
            for start in range(0, part.num_rows, BATCH_REQUESTS):
                rows = expand_predictions(part.slice(start, BATCH_REQUESTS))
                for served in _by_version(rows, routed):
                    entry = found.get(served.key)
                    if entry is None:
                        entry = found[served.key] = _Profiled(
                            served.key, self._reference(task, served.uri))
                    entry.add(served.rows)
        return {key: found[key] for key in sorted(found)}

    def _labelled(self, task: MeasureTask, keep: tuple[str, ...]) -> list[_Served]:
        """Return the window's rows with their labels known at ``as_of``, per version."""
        table = self._predictions.read(self._log_window(task), ReadOptions(with_feedback=True))
        table = _without_late_labels(table, task)
        if table.num_rows == 0:
            return []
        return _by_version(expand_predictions(table, keep),
                           _Routed(self, task.rule.scope.deployment))

    def _routed(self, deployment: str) -> dict[str, ModelURI]:
        """Return log name -> version of every version ``deployment`` has routed to."""
        try:
            history = DeploymentQueries(self._store.engine).history(deployment, MAX_HISTORY)
        except NotFoundError:
            return {}
        uris = {version_uri(route.model, route.version) for change in history
                for route in change.routes}
        return {log_name(uri): ModelURI.parse(uri) for uri in uris}

    def _reference(self, task: MeasureTask, uri: ModelURI | None) -> ReferenceLike | None:
        if uri is None or uri.version is None:
            return None
        name, version = uri.name, uri.version
        return _memo(task, ("reference", name, version),
                     lambda: self._references.reference_of(name, version))

    def _quality(self, task: MeasureTask, part: _Served) -> Measurement:
        rule = task.rule
        reference = self._reference(task, part.uri)
        chosen = task.slice
        slices = {} if chosen is None else {chosen.name: chosen}
        report = quality_report(part.rows, slices,
                                None if reference is None else reference.metrics)
        found = report.get(rule.scope.slice)
        numbers: dict[str, Any] = {"task": report.task, **found.to_dict()}
        if rule.signal is SignalKind.LABEL_SHARE:
            return Measurement(found.label_share if found.total else None, found.total,
                               numbers)
        metric = str(rule.metric)
        table = found.drop if rule.baseline is not None else found.metrics
        value = table.get(metric)
        if value is None:
            numbers["reason"] = _missing_metric(rule, found.labelled, reference is not None)
        return Measurement(value, found.labelled, numbers)

    # ------------------------------------------------------------------ health

    def _health(self, task: MeasureTask) -> Measurement:
        rule = task.rule
        report = health(self._store, rule.scope.deployment, rule.scope.model_version,
                        task.start, task.end)
        if rule.scope.model_version is not None or rule.signal is SignalKind.THROUGHPUT \
                or not report.versions:
            return _health_value(rule, report.overall.to_dict())
        return _worst(rule, {uri: _health_value(rule, part.to_dict())
                             for uri, part in report.versions.items()})


class _Routed:
    """The deployment's routed versions by log name, looked up once and only when asked."""

    def __init__(self, measurer: SignalMeasurer, deployment: str) -> None:
        self._measurer = measurer
        self._deployment = deployment
        self._found: dict[str, ModelURI] | None = None

    def __call__(self) -> Mapping[str, ModelURI]:
        if self._found is None:
            self._found = self._measurer._routed(self._deployment)
        return self._found


def _drift(task: MeasureTask, part: _Profiled) -> Measurement:
    window = part.profile()
    if part.reference is None or window is None:
        return Measurement(None, part.rows, {"reason": f"{part.key} has no reference profile"})
    if task.rule.signal is SignalKind.DATASET_DRIFT:
        return _dataset_drift(task, part.reference.inputs, window)
    reference: Profile | None
    if task.rule.signal is SignalKind.COLUMN_DRIFT:
        column = task.rule.scope.column or ""
        skipped = window.skipped.get(column)
        current = window.inputs if column in window.present else None
        reference = part.reference.inputs
    else:
        column, skipped = PREDICTION_COLUMN, window.outputs_skipped
        current, reference = window.outputs, part.reference.outputs
    if skipped is not None:
        return Measurement(None, window.rows, {"reason": f"{column!r}: {skipped}"})
    if reference is None or current is None or column not in reference.names:
        return Measurement(None, window.rows, {"reason": f"{column!r} is not in both the "
                                                         f"reference of {part.key} and the "
                                                         "window's rows"})
    return _scored(reference.column(column), current.column(column), task, window.rows)


def _dataset_drift(task: MeasureTask, reference: Profile, window: WindowProfile,
                   ) -> Measurement:
    names = [name for name in reference.names if name not in window.skipped]
    columns = [name for name in names if name in window.present]
    if not columns or window.inputs is None:
        return Measurement(None, window.rows, {"reason": "no reference column is in the "
                                                         "window's rows",
                                               "skipped": dict(window.skipped)})
    report = dataset_drift(reference, window.inputs, task.drift, columns)
    numbers = report.to_dict()
    numbers["skipped"] = {**{name: "not in the current window" for name in names
                             if name not in window.present},
                          **window.skipped, **report.skipped}
    return Measurement(report.share, window.rows, numbers)


def _scored(reference: ColumnProfile, current: ColumnProfile, task: MeasureTask,
            rows: int) -> Measurement:
    """Return one column's drift score; a column that cannot be compared has the reason."""
    try:
        found = column_drift(reference, current, task.drift.spec(reference.name))
    except InvalidArgumentError as exc:
        if exc.field != f"column {reference.name!r}":
            raise  # a method or threshold that does not fit: the config's mistake
        return Measurement(None, rows, {"reason": exc.message})
    return Measurement(found.score, rows, found.to_dict())


def _health_value(rule: AlertRule, numbers: Mapping[str, Any]) -> Measurement:
    name = _HEALTH_VALUES.get(rule.signal, f"{rule.metric}_ms")
    requests = int(numbers["requests"])
    value = numbers.get(name) if requests or rule.signal is SignalKind.THROUGHPUT else None
    kept = dict(numbers)
    if value is None:
        kept["reason"] = "no requests in the window" if not requests else f"no {name} data"
    return Measurement(None if value is None else float(value), requests, kept)


def _missing_metric(rule: AlertRule, labelled: int, has_reference: bool) -> str:
    if not labelled:
        return "no labelled rows"
    if rule.baseline is not None:
        return (f"no training value of {rule.metric}" if has_reference
                else "the version has no reference (training metrics)")
    return f"{rule.metric} could not be computed on these rows"
