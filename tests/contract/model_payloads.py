"""Objects only the ``python`` (pickle) flavor stores, shared by the registry's contract tests.

``FileDropper`` is a malicious payload: unpickling it creates the file at ``path``; a test
that finds the file afterwards knows code from an artifact ran.
"""

from __future__ import annotations

import pathlib
from pathlib import Path
from typing import Any

import numpy as np


class MeanModel:
    """A plain Python model, not scikit-learn-compatible: only the python flavor stores it."""

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
