"""The holdout sample recorded at registration, so a version can later prove it scores the same.

At registration a bounded, deterministic sample of the holdout data (``holdout=``, or else
the ``input_example``) is stored as Parquet with the model's outputs on it, both in the
artifact store; the version keeps ``extra["holdout"]``::

    {"rows": 150, "of_rows": 150, "selection": "all" | "random(seed=0)", "layout": "frame",
     "inputs": SHA-256, "outputs": SHA-256, "methods": ["predict", "predict_proba"],
     "tolerance": "exact" | {"rtol": 1e-05, "atol": 1e-06}, "artifact_digest": SHA-256}

At most ``MAX_ROWS`` rows are kept: all of them when there are no more, else a random choice
with a fixed seed (kept in their original order), so registering the same data twice records
the same sample. The recorded outputs come from the model object being registered (an ONNX
model, which has no ``predict`` of its own, is scored as its flavor loads it): ``verify`` then
proves the saved artifact, loaded elsewhere, reproduces what the trained object did. Outputs
are computed on the sample as decoded back from its Parquet bytes, so the comparison never
counts a conversion as a difference.

Tolerance: ``exact`` (bit-for-bit equal values) for the ``sklearn`` and ``python`` flavors,
whose scoring is deterministic in one environment; ``onnx`` defaults to ``rtol=1e-5,
atol=1e-6`` (float32 kernels differ between CPUs). A tolerance applies to floating-point
outputs only; labels, integers and text are always compared exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopline.core.canonical import is_digest, sha256_hex
from loopline.core.errors import (
    IntegrityError,
    InvalidArgumentError,
    LooplineError,
    NotFoundError,
    UserCodeError,
)
from loopline.core.models import ModelVersion
from loopline.registry.flavors import UNTRUSTED, EstimatorModel, Flavor, LoadedModel
from loopline.registry.holdout_io import (
    LAYOUTS,
    as_sample,
    decode_inputs,
    encode_inputs,
    encode_outputs,
    score,
)

MAX_ROWS = 1_000
SEED = 0
MAX_BYTES = 64 << 20
EXACT = "exact"
DEFAULT_TOLERANCE: Mapping[str, Mapping[str, float]] = {"onnx": {"rtol": 1e-5, "atol": 1e-6}}
Tolerance = str | Mapping[str, float]


def parse_tolerance(value: Any, flavor: str) -> str | dict[str, float]:
    """Return the tolerance policy ``value`` names (None: the flavor's default).

    Raises:
        InvalidArgumentError: naming ``tolerance`` unless it is ``"exact"`` or a mapping of
            ``rtol`` and/or ``atol`` to finite numbers from 0.
    """
    if value is None:
        default = DEFAULT_TOLERANCE.get(flavor)
        return EXACT if default is None else dict(default)
    if value == EXACT:
        return EXACT
    if not isinstance(value, Mapping) or not value or not set(value) <= {"rtol", "atol"}:
        raise InvalidArgumentError("tolerance", f"{value!r} must be 'exact' or a mapping "
                                                "with rtol and/or atol, e.g. {'atol': 1e-9}")
    parsed = {"rtol": value.get("rtol", 0.0), "atol": value.get("atol", 0.0)}
    for key, number in parsed.items():
        if isinstance(number, bool) or not isinstance(number, int | float) \
                or not math.isfinite(number) or number < 0:
            raise InvalidArgumentError("tolerance", f"{key} must be a finite number from 0, "
                                                    f"not {number!r}")
    return {key: float(number) for key, number in parsed.items()}


def select_rows(total: int, limit: int = MAX_ROWS) -> tuple[Any, str]:
    """Return the row positions to keep out of ``total`` and how they were chosen."""
    if total <= limit:
        return np.arange(total), "all"
    chosen = np.random.default_rng(SEED).choice(total, size=limit, replace=False)
    return np.sort(chosen), f"random(seed={SEED})"


@dataclass(frozen=True, slots=True)
class PreparedHoldout:
    """A holdout ready to store: its record for ``extra["holdout"]`` and the two files."""

    record: Mapping[str, Any]
    inputs: bytes
    outputs: bytes


def scorer_for(model: Any, flavor: Flavor, artifact: bytes) -> LoadedModel:
    """Return what scores ``model`` at registration: the object itself when it can predict.

    An object without ``predict`` (an ONNX ``ModelProto``) is scored as its flavor loads
    ``artifact``, without trust: a flavor that needs trust has objects that predict.
    """
    if callable(getattr(model, "predict", None)):
        return EstimatorModel(flavor.name, model)
    return flavor.load(artifact, UNTRUSTED)


def prepare_holdout(scorer: LoadedModel, data: Any, artifact_digest: str,
                    tolerance: str | dict[str, float]) -> PreparedHoldout:
    """Return the sample of ``data``, ``scorer``'s outputs on it and the record of both.

    Raises:
        InvalidArgumentError: naming ``holdout`` when the data or the outputs cannot be
            stored, or the sample is larger than ``MAX_BYTES``.
        UserCodeError: when the model raises while scoring the sample.
    """
    sample, layout = as_sample(data)
    rows, selection = select_rows(len(sample))
    chosen = sample.iloc[rows].reset_index(drop=True) if layout == "frame" else sample[rows]
    inputs = encode_inputs(chosen, layout)
    if len(inputs) > MAX_BYTES:
        raise InvalidArgumentError("holdout", f"its {len(rows)} rows take {len(inputs)} bytes "
                                              f"as Parquet, more than {MAX_BYTES}")
    try:
        outputs = score(scorer, decode_inputs(inputs, layout))
    except LooplineError:
        raise
    except Exception as exc:  # the user's model: any failure is theirs, kept as the cause
        raise UserCodeError(f"the model raised while scoring the holdout sample: "
                            f"{type(exc).__name__}: {exc}") from exc
    encoded = encode_outputs(outputs)
    record = {"rows": len(rows), "of_rows": len(sample), "selection": selection,
              "layout": layout, "inputs": sha256_hex(inputs), "outputs": sha256_hex(encoded),
              "methods": sorted(outputs), "tolerance": tolerance,
              "artifact_digest": artifact_digest}
    return PreparedHoldout(record, inputs, encoded)


@dataclass(frozen=True, slots=True)
class HoldoutRecord:
    """The holdout a version recorded, read back from ``extra["holdout"]`` and checked."""

    rows: int
    layout: str
    inputs: str
    outputs: str
    methods: tuple[str, ...]
    tolerance: str | dict[str, float]
    artifact_digest: str

    @classmethod
    def of(cls, version: ModelVersion) -> HoldoutRecord:
        """Return the holdout ``version`` recorded.

        Raises:
            NotFoundError: naming the version and the fix when it recorded none.
            IntegrityError: when the record is malformed.
        """
        found = version.extra.get("holdout")
        if found is None:
            raise NotFoundError("holdout sample of", version.uri,
                                "it was registered without one; register the model again "
                                "with input_example=X (or holdout=X) to record one")
        try:
            return cls.parse(found, version.flavor)
        except (InvalidArgumentError, KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"the holdout record of {version.uri} is malformed: {exc}"
                                 ) from exc

    @classmethod
    def parse(cls, found: Any, flavor: str) -> HoldoutRecord:
        """Return the record in the mapping ``found`` (a version's or a bundle's).

        Raises:
            KeyError, TypeError, ValueError, InvalidArgumentError: when it is malformed.
        """
        digests = [found[key] for key in ("inputs", "outputs", "artifact_digest")]
        if not all(isinstance(d, str) and is_digest(d) for d in digests):
            raise ValueError("a digest is not a SHA-256")
        rows, methods = found["rows"], found["methods"]
        if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= MAX_ROWS:
            raise ValueError(f"rows {rows!r} is not a count up to {MAX_ROWS}")
        if found["layout"] not in LAYOUTS:
            raise ValueError(f"layout {found['layout']!r} is unknown")
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise TypeError("methods must be a list of names")
        return cls(rows, found["layout"], digests[0], digests[1], tuple(methods),
                   parse_tolerance(found["tolerance"], flavor), digests[2])
