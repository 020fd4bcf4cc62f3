"""Measuring a rule's signal over a window, from the prediction log, references and stats.

``SignalMeasurer`` is the evaluator's ``Measurer``:

- drift (``dataset_drift``, ``column_drift``, ``prediction_drift``): the window's logged
  requests, expanded to one row per scored row (``window_rows.expand_predictions``), are
  profiled and compared with the reference profile of the version that served them
  (``drift.dataset_drift`` on the inputs: the value is the share of columns that drifted;
  ``drift.column_drift`` on one input column or on the outputs: the value is the score).
- ``quality`` and ``label_share``: the window read with its feedback labels, scored by
  ``quality.quality_report`` (overall or on the rule's slice) against the version's training
  metrics: the value is the metric, or with ``baseline: training`` its drop (positive is
  worse); samples are the labelled rows for quality and all rows for the label share.
  Labels timed after the evaluation (``as_of``) are left out, so a re-run agrees.
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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from loopline.core.errors import InvalidArgumentError, NotFoundError
from loopline.core.models import MODELS_SCHEME, ModelURI, version_uri
from loopline.core.monitoring import AlertRule, Comparison, Measurement, SignalKind
from loopline.core.predictions import PredictionWindow
from loopline.data.prediction_log import ReadOptions
from loopline.data.profiling import Profile, profile_table
from loopline.monitoring.config_yaml import PREDICTION_COLUMN
from loopline.monitoring.drift import column_drift, dataset_drift
from loopline.monitoring.health import health
from loopline.monitoring.quality import quality_report
from loopline.monitoring.window_rows import MODEL_VERSION, PREDICTION, expand_predictions
from loopline.monitoring.windows import MeasureTask
from loopline.store import MetadataStore
from loopline.store.deployment_queries import DeploymentQueries

__all__ = ["LOG_NAME_LIMIT", "PredictionReader", "ReferenceLike", "ReferenceSource",
           "SignalMeasurer", "log_name", "version_of_log_name"]

LOG_NAME_LIMIT = 128
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

    The same rule as ``serving.scoring.log_version``, which this layer may not import (a
    test holds the two equal): a model name too long for the log's 128 characters is cut
    and given a short hash of the whole name.

    Raises:
        InvalidArgumentError: naming ``model`` when ``uri`` names no version.
    """
    parsed = ModelURI.parse(uri)
    name = f"{parsed.name}.v{parsed.version}"
    if len(name) <= LOG_NAME_LIMIT:
        return name
    suffix = f"-{hashlib.sha256(parsed.name.encode()).hexdigest()[:10]}.v{parsed.version}"
    return parsed.name[:LOG_NAME_LIMIT - len(suffix)] + suffix


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
            return self._per_version(task, with_feedback=False, measure=self._drift)
        if signal in _QUALITY:
            return self._per_version(task, with_feedback=True, measure=self._quality)
        return self._health(task)

    # ------------------------------------------------------------------ the log's signals

    def _per_version(self, task: MeasureTask, with_feedback: bool,
                     measure: Callable[[MeasureTask, _Served], Measurement]) -> Measurement:
        scope = task.rule.scope
        window = PredictionWindow(
            deployment=scope.deployment, start=task.start, end=task.end,
            model_version=None if scope.model_version is None else log_name(scope.model_version))
        table = self._predictions.read(window, ReadOptions(with_feedback=with_feedback))
        if with_feedback:
            table = _without_late_labels(table, task)
        if table.num_rows == 0:
            return Measurement(None, 0, {"reason": "no predictions in the window"})
        served = _by_version(expand_predictions(table),
                             lambda: self._routed(scope.deployment))
        return _worst(task.rule, {part.key: measure(task, part) for part in served})

    def _routed(self, deployment: str) -> dict[str, ModelURI]:
        """Return log name -> version of every version ``deployment`` has routed to."""
        try:
            history = DeploymentQueries(self._store.engine).history(deployment, MAX_HISTORY)
        except NotFoundError:
            return {}
        uris = {version_uri(route.model, route.version) for change in history
                for route in change.routes}
        return {log_name(uri): ModelURI.parse(uri) for uri in uris}

    def _reference(self, part: _Served) -> ReferenceLike | None:
        if part.uri is None or part.uri.version is None:
            return None
        return self._references.reference_of(part.uri.name, part.uri.version)

    def _drift(self, task: MeasureTask, part: _Served) -> Measurement:
        rows = part.rows.num_rows
        reference = self._reference(part)
        if reference is None:
            return Measurement(None, rows, {"reason": f"{part.key} has no reference profile"})
        rule = task.rule
        if rule.signal is SignalKind.DATASET_DRIFT:
            columns = [name for name in reference.inputs.names
                       if name in part.rows.column_names]
            if not columns:
                return Measurement(None, rows, {"reason": "no reference column is in the "
                                                          "window's rows"})
            report = dataset_drift(reference.inputs, profile_table(part.rows.select(columns)),
                                   task.drift, columns)
            return Measurement(report.share, rows, report.to_dict())
        column = rule.scope.column or PREDICTION_COLUMN
        source = column if rule.signal is SignalKind.COLUMN_DRIFT else PREDICTION
        profile = reference.inputs if rule.signal is SignalKind.COLUMN_DRIFT \
            else reference.outputs
        if profile is None or column not in profile.names \
                or source not in part.rows.column_names:
            return Measurement(None, rows, {"reason": f"{column!r} is not in both the "
                                                      f"reference of {part.key} and the "
                                                      "window's rows"})
        current = profile_table(part.rows.select([source]).rename_columns([column]))
        found = column_drift(profile.column(column), current.column(column),
                             task.drift.spec(column))
        return Measurement(found.score, rows, found.to_dict())

    def _quality(self, task: MeasureTask, part: _Served) -> Measurement:
        rule = task.rule
        reference = self._reference(part)
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
