"""Scoring one chunk of a batch-scoring run, and the local backends that run chunks.

:func:`score_chunk` runs anywhere (the calling thread, a pool thread, a Ray worker) and never
raises for the data or the model: signature errors, warnings and the model's own failures
come back as a :class:`ChunkOutput`, so nothing has to survive pickling across processes.
A backend's ``submit`` returns a callable that waits for the chunk's output; the driver
calls them in submission order, so output order is input order.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from loopline.core.errors import InvalidArgumentError
from loopline.registry.flavors import LoadedModel
from loopline.registry.signature_checks import check_batch
from loopline.registry.signatures import Signature

PREDICTION = "prediction"
PROBA_PREFIX = "proba_"


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """What a worker needs besides the model: the input columns, the signature, the outputs."""

    features: tuple[str, ...]
    signature: Signature | None
    proba: bool
    labels: tuple[str, ...] | None  # the proba column names, in predict_proba's order


@dataclass(frozen=True, slots=True)
class ChunkOutput:
    """A scored chunk, or why it could not be: ``errors`` (signature) or ``failure`` (model)."""

    outputs: dict[str, Any] | None
    errors: tuple[str, ...] = ()
    warnings: tuple[tuple[str, str, int], ...] = ()  # (column, kind, rows)
    failure: str | None = None
    refused: bool = False  # the failure is the model refusing its input (bad data)


def score_chunk(model: LoadedModel, spec: ChunkSpec, features: pa.Table) -> ChunkOutput:
    """Check ``features`` against the signature and score them; never raises for the data.

    Runs anywhere (this thread, a pool thread, a Ray worker): problems come back as data.
    """
    frame = features.to_pandas()
    found = [] if spec.signature is None else check_batch(spec.signature, frame)
    errors = tuple(v.message for v in found if v.severity == "error")
    warnings = tuple((v.column, v.kind, v.rows) for v in found if v.severity == "warning")
    if errors:
        return ChunkOutput(None, errors, warnings)
    frame = frame[list(spec.features)]
    try:
        outputs = _predictions(np.asarray(model.predict(frame)))
        if spec.proba and spec.labels is not None:
            probabilities = np.asarray(model.predict_proba(frame)).reshape(len(frame), -1)
            outputs.update(zip(spec.labels, probabilities.T, strict=True))
    except InvalidArgumentError as exc:
        return ChunkOutput(None, warnings=warnings, failure=exc.problem, refused=True)
    except Exception as exc:  # noqa: BLE001 - the user's model: any failure is theirs
        return ChunkOutput(None, warnings=warnings, failure=f"{type(exc).__name__}: {exc}")
    return ChunkOutput(outputs, warnings=warnings)


def _predictions(values: Any) -> dict[str, Any]:
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.ravel()
    if values.ndim == 1:
        return {PREDICTION: values}
    if values.ndim == 2:
        return {f"{PREDICTION}_{i}": column for i, column in enumerate(values.T)}
    raise InvalidArgumentError("model", f"predict returned a {values.ndim}-D result; batch "
                                        "scoring writes 1-D or 2-D predictions")


Pending = Callable[[], ChunkOutput]


class Backend(Protocol):
    """Where chunks are scored: at most ``window`` are in flight at once."""

    @property
    def window(self) -> int:
        """How many chunks may be in flight."""
        ...

    def submit(self, features: pa.Table) -> Pending:
        """Start scoring ``features``; the returned callable waits for the output."""
        ...

    def close(self) -> None:
        """Release what the backend holds; chunks still queued are dropped."""
        ...


class Inline:
    """Scores each chunk in the calling thread."""

    window = 1

    def __init__(self, model: LoadedModel, spec: ChunkSpec) -> None:
        self._model, self._spec = model, spec

    def submit(self, features: pa.Table) -> Pending:
        """Score ``features`` now."""
        result = score_chunk(self._model, self._spec, features)
        return lambda: result

    def close(self) -> None:
        """Release nothing: there is nothing held."""


class Threads:
    """Scores chunks in a pool of threads, ``2 * workers`` in flight."""

    def __init__(self, model: LoadedModel, spec: ChunkSpec, workers: int) -> None:
        self._model, self._spec = model, spec
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="loopline-score")
        self.window = 2 * workers

    def submit(self, features: pa.Table) -> Pending:
        """Queue ``features`` on the pool."""
        return self._pool.submit(score_chunk, self._model, self._spec, features).result

    def close(self) -> None:
        """Stop the pool, dropping chunks not started."""
        self._pool.shutdown(wait=True, cancel_futures=True)
