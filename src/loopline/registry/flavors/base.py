"""The flavor contract: how a model object becomes bytes and how bytes become a served model.

A flavor never verifies where its bytes came from: the registry reads them through the
content-addressed store, which checks the SHA-256 on every read (``IntegrityError`` on a
mismatch) before a flavor sees them. A flavor checks only its format, and refuses to run
anything from an artifact that the :class:`TrustContext` does not allow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from loopline.core.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class TrustContext:
    """What the caller trusts an artifact with when loading it.

    The registry builds this from the version's audited trust decisions only: ``trusted``
    is True when the version has a decision trusting the whole artifact (a ``python``
    pickle then loads; a ``sklearn`` archive loads with every type it names);
    ``trusted_types`` are the extra fully qualified type names (``package.module.Name``) a
    decision allowed for a ``sklearn`` archive beyond loopline's allow list.
    """

    trusted: bool = False
    trusted_types: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        """Check the fields' types.

        Raises:
            InvalidArgumentError: naming the field that is not a bool or a set of strings.
        """
        if not isinstance(self.trusted, bool):
            raise InvalidArgumentError("trust.trusted", f"{self.trusted!r} is not a bool")
        names = self.trusted_types
        if not isinstance(names, frozenset) or not all(isinstance(n, str) for n in names):
            raise InvalidArgumentError("trust.trusted_types",
                                       "must be a frozenset of fully qualified type names")

    @classmethod
    def allowing(cls, types: Iterable[str]) -> TrustContext:
        """Return a context that trusts exactly ``types`` beyond the allow list."""
        return cls(trusted_types=frozenset(types))


UNTRUSTED = TrustContext()


class LoadedModel(Protocol):
    """A model ready to score batches, whatever flavor it was stored in."""

    @property
    def flavor(self) -> str:
        """The name of the flavor that loaded it."""
        ...

    @property
    def raw(self) -> Any:
        """The underlying object: the estimator, or the ``onnxruntime`` session."""
        ...

    @property
    def classes(self) -> tuple[Any, ...] | None:
        """The class labels in the order of ``predict_proba``'s columns, when known."""
        ...

    @property
    def has_proba(self) -> bool:
        """Tell whether :meth:`predict_proba` is available."""
        ...

    def predict(self, batch: Any) -> Any:
        """Return one prediction per row of ``batch`` (a DataFrame or a 2-D array)."""
        ...

    def predict_proba(self, batch: Any) -> Any:
        """Return class probabilities per row (raises ``InvalidArgumentError`` without any)."""
        ...


class Flavor(Protocol):
    """A model format: which objects it takes, how it saves them and loads them back."""

    @property
    def name(self) -> str:
        """The name recorded with each model version (``sklearn``, ``onnx``, ``python``)."""
        ...

    def accepts(self, model: object) -> bool:
        """Tell whether :meth:`save` takes ``model``; imports nothing heavy to decide."""
        ...

    def save(self, model: Any) -> bytes:
        """Return ``model`` as bytes, the same bytes for the same model where possible."""
        ...

    def load(self, data: bytes, trust: TrustContext) -> LoadedModel:
        """Return the model in ``data`` (already verified by the content store)."""
        ...


def no_probabilities(flavor: str, model: object) -> InvalidArgumentError:
    """Return the error for asking probabilities of a model that gives none."""
    return InvalidArgumentError(
        "predict_proba", f"the {flavor!r} model ({type(model).__name__}) gives no "
                         "probabilities; call predict instead")


class EstimatorModel:
    """A loaded in-process estimator: anything with ``predict`` (``sklearn``, ``python``).

    ``ValueError`` from the estimator (scikit-learn's way of refusing input) becomes
    ``InvalidArgumentError`` naming the batch; anything else propagates unchanged.
    """

    __slots__ = ("_flavor", "_raw")

    def __init__(self, flavor: str, raw: Any) -> None:
        self._flavor = flavor
        self._raw = raw

    @property
    def flavor(self) -> str:
        """The name of the flavor that loaded it."""
        return self._flavor

    @property
    def raw(self) -> Any:
        """The estimator itself."""
        return self._raw

    @property
    def classes(self) -> tuple[Any, ...] | None:
        """The estimator's ``classes_`` as Python values, or None (a regressor, say)."""
        labels = getattr(self._raw, "classes_", None)
        if labels is None:
            return None
        to_list = getattr(labels, "tolist", None)
        return tuple(to_list() if callable(to_list) else labels)

    @property
    def has_proba(self) -> bool:
        """Tell whether the estimator has a callable ``predict_proba``."""
        # getattr's default also covers scikit-learn's ``available_if`` (a pipeline whose
        # last step has no predict_proba raises AttributeError on access).
        return callable(getattr(self._raw, "predict_proba", None))

    def predict(self, batch: Any) -> Any:
        """Return the estimator's predictions for ``batch``.

        Raises:
            InvalidArgumentError: when the estimator refuses the batch with ``ValueError``.
        """
        try:
            return self._raw.predict(batch)
        except ValueError as exc:
            raise InvalidArgumentError("batch", f"the model refused it: {exc}") from exc

    def predict_proba(self, batch: Any) -> Any:
        """Return the estimator's class probabilities for ``batch``.

        Raises:
            InvalidArgumentError: when the estimator has no probabilities or refuses the batch.
        """
        if not self.has_proba:
            raise no_probabilities(self._flavor, self._raw)
        try:
            return self._raw.predict_proba(batch)
        except ValueError as exc:
            raise InvalidArgumentError("batch", f"the model refused it: {exc}") from exc
