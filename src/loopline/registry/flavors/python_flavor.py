"""The ``python`` flavor: any object with ``predict``, pickled; loads only when trusted.

Unpickling runs code named by the artifact, so :meth:`PythonFlavor.load` refuses before it
reads a single byte of the pickle unless the registry passes ``trust.trusted`` (the version
has an audited trust decision). The flavor is never chosen automatically. Pickles of the same
object are usually, not always, the same bytes (set order can vary between processes).
"""

from __future__ import annotations

import pickle
from typing import Any

from loopline.core.errors import (
    ConfigurationError,
    IntegrityError,
    InvalidArgumentError,
    UntrustedModelError,
)
from loopline.registry.flavors.base import EstimatorModel, TrustContext

PROTOCOL = 5


class PythonFlavor:
    """Arbitrary Python objects with ``predict(batch)``, stored as pickles."""

    name = "python"

    def accepts(self, model: object) -> bool:
        """Tell whether ``model`` has a callable ``predict`` (the flavor is opt-in only)."""
        return not isinstance(model, type) and callable(getattr(model, "predict", None))

    def save(self, model: Any) -> bytes:
        """Return ``model`` pickled with protocol 5.

        Raises:
            InvalidArgumentError: when ``model`` has no ``predict`` or cannot be pickled.
        """
        kind = type(model).__name__
        if not self.accepts(model):
            raise InvalidArgumentError("model", f"a {kind} has no predict(batch) method, which "
                                                "the 'python' flavor needs")
        try:
            return pickle.dumps(model, protocol=PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise InvalidArgumentError("model", f"this {kind} cannot be pickled: {exc}") from exc

    def load(self, data: bytes, trust: TrustContext) -> EstimatorModel:
        """Return the unpickled model, only when ``trust.trusted`` is True.

        Raises:
            UntrustedModelError: without a trust decision; nothing was unpickled.
            ConfigurationError: when the pickle needs a module this environment lacks.
            IntegrityError: when ``data`` does not unpickle to an object with ``predict``.
        """
        if trust.trusted is not True:
            raise UntrustedModelError(
                self.name, "it is a pickle, which runs code named by the artifact while "
                           "loading, and this version has no audited trust decision",
                ("pickle",))
        try:
            model = pickle.loads(data)  # trusted: the version has an audited decision (above)
        except ModuleNotFoundError as exc:
            raise ConfigurationError(f"the model needs the module {exc.name!r}, which is not "
                                     "installed here; install the packages it was saved "
                                     "with") from exc
        except (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError, TypeError,
                AttributeError, ImportError) as exc:
            raise IntegrityError(f"the 'python' artifact does not unpickle: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if not self.accepts(model):
            raise IntegrityError(f"the 'python' artifact holds a {type(model).__name__}, "
                                 "which has no predict method")
        return EstimatorModel(self.name, model)
