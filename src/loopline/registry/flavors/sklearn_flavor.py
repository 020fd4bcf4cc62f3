"""The ``sklearn`` flavor: scikit-learn-compatible estimators as skops archives.

Saving: ``skops.io.dumps``, then made canonical (archive members renamed by first use instead
of by ``id()``, fixed timestamps), so the same fitted model gives the same bytes and digest.

Loading: skops names every type it does not trust by default; each must pass loopline's allow
list (:func:`is_allowed`) or the :class:`TrustContext`, or nothing is constructed and
``UntrustedModelError`` names them. A name is resolved (its module imported) only under
``sklearn``, ``numpy`` or ``scipy`` and outside test, dataset, vendored and build subpackages;
then the *object* is judged, so a name re-exporting something else is judged by what it is:

    scikit-learn  classes defined in sklearn; functions only from sklearn.metrics,
                  sklearn.feature_selection and sklearn.cluster (scores, kernels, k-means steps)
    NumPy         ndarray, masked arrays, dtypes, scalar types, numpy.random classes, ufuncs,
                  and the reductions in ``_EXPLICIT`` (never memmap, load or any I/O helper)
    SciPy         classes from scipy.sparse, scipy.stats and scipy.interpolate; ufuncs
    stdlib        the few containers and datetime types in ``_EXPLICIT``

The list stops code execution chosen by *naming* a callable; it cannot make a crafted numeric
payload safe for compiled code that trusts its arrays (a tree's node indices): the content
hash and the record of who registered the version answer for that.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
import zipfile
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any

from loopline.core.errors import (
    ConfigurationError,
    IntegrityError,
    InvalidArgumentError,
    UntrustedModelError,
)
from loopline.registry.flavors.base import EstimatorModel, TrustContext

_ROOTS = frozenset({"sklearn", "numpy", "scipy"})
_DENIED_PARTS = frozenset({
    "tests", "testing", "_testing", "conftest", "estimator_checks", "externals", "datasets",
    "experimental", "_build_utils", "__check_build", "_show_versions", "f2py", "distutils",
    "ctypeslib", "_pytesttester",
})
_SKLEARN_FUNCTION_MODULES = ("sklearn.metrics.", "sklearn.feature_selection.", "sklearn.cluster.")
_SCIPY_CLASS_MODULES = ("scipy.sparse.", "scipy.stats.", "scipy.interpolate.")
_EXPLICIT = frozenset({
    "builtins.complex", "builtins.frozenset", "builtins.slice",
    "collections.Counter", "collections.OrderedDict", "collections.defaultdict",
    "datetime.date", "datetime.datetime", "datetime.time", "datetime.timedelta",
    "datetime.timezone",
    "numpy.amax", "numpy.amin", "numpy.average", "numpy.max", "numpy.mean", "numpy.median",
    "numpy.min", "numpy.nanmax", "numpy.nanmean", "numpy.nanmedian", "numpy.nanmin",
    "numpy.nanstd", "numpy.nansum", "numpy.nanvar", "numpy.percentile", "numpy.quantile",
    "numpy.std", "numpy.sum", "numpy.var",
    "scipy._lib.array_api_compat.numpy._aliases.asarray",
})
_SCHEMA = "schema.json"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_MAX_MEMBERS = 100_000
_MAX_EXPANSION = 100  # the members may hold at most this many times the archive's size


def _skops_io() -> Any:
    import skops.io

    return skops.io


# -- the allow list -------------------------------------------------------------------------

def _clean(module: str) -> bool:
    return not _DENIED_PARTS.intersection(module.split("."))


def _resolve(name: str) -> object | None:
    """Return the object ``name`` means, importing only allowed, clean modules; else None."""
    module_name, _, attr = name.rpartition(".")
    parts = module_name.split(".")
    if parts[0] not in _ROOTS or not _clean(module_name) or not attr.isidentifier():
        return None
    if not all(part.isidentifier() for part in parts):
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, attr, None)


def _safe_class(cls: type) -> bool:
    import numpy as np

    module = cls.__module__ or ""
    if module.startswith("sklearn."):
        return _clean(module)
    if cls in (np.ndarray, np.ma.MaskedArray) or issubclass(cls, np.dtype | np.generic):
        return True  # exactly these: ndarray subclasses such as memmap open files
    return module.startswith(("numpy.random.", *_SCIPY_CLASS_MODULES))


def _safe_object(value: object) -> bool:
    import numpy as np

    if isinstance(value, np.ufunc):  # NumPy's and scipy.special's: arithmetic only
        return True
    if isinstance(value, type):
        return _safe_class(value)
    module = getattr(value, "__module__", None) or ""
    return callable(value) and module.startswith(_SKLEARN_FUNCTION_MODULES) and _clean(module)


@lru_cache(maxsize=4096)
def is_allowed(name: str) -> bool:
    """Tell whether the type or function named ``module.Name`` is on loopline's allow list."""
    if name in _EXPLICIT:
        return True
    found = _resolve(name)
    return found is not None and _safe_object(found)


def untrusted_types(data: bytes, trust: TrustContext | None = None) -> tuple[str, ...]:
    """Return the names in a skops archive that neither the allow list nor ``trust`` allows.

    Raises:
        IntegrityError: when ``data`` is not a readable skops archive.
    """
    trust = trust or TrustContext()
    return tuple(sorted(name for name in _reported(data) if not _trusted(name, trust)))


def _trusted(name: str, trust: TrustContext) -> bool:
    return trust.trusted or name in trust.trusted_types or is_allowed(name)


def _reported(data: bytes) -> list[str]:
    _check_archive(data)
    try:
        return list(_skops_io().get_untrusted_types(data=data))
    except (KeyError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise IntegrityError(f"the 'sklearn' artifact is not a readable skops archive: "
                             f"{type(exc).__name__}: {exc}") from exc


def _check_archive(data: bytes) -> None:
    """Refuse bytes that are not a zip holding a schema, or that would expand too far."""
    problem = ""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        problem = f"not a zip archive ({exc})"
    else:
        if _SCHEMA not in {member.filename for member in members}:
            problem = f"it holds no {_SCHEMA}"
        elif len(members) > _MAX_MEMBERS:
            problem = f"it holds {len(members)} members, more than {_MAX_MEMBERS}"
        elif sum(m.file_size for m in members) > _MAX_EXPANSION * len(data) + (1 << 20):
            problem = f"its members expand to more than {_MAX_EXPANSION} times its size"
    if problem:
        raise IntegrityError(f"the 'sklearn' artifact is not a readable skops archive: {problem}")


# -- canonical archives ---------------------------------------------------------------------

def _write_zip(members: list[tuple[str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for name, payload, compression in members:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = compression
            info.external_attr = 0o600 << 16
            out.writestr(info, payload)
    return buffer.getvalue()


def _canonical_zip(payload: bytes) -> bytes:
    """Return a nested zip (SciPy's ``.npz``) with fixed timestamps."""
    with zipfile.ZipFile(io.BytesIO(payload)) as inner:
        members = [(i.filename, inner.read(i), i.compress_type) for i in inner.infolist()]
    return _write_zip(members)


def _renumber(schema: Any) -> dict[str, str]:
    """Renumber ``__id__`` values and member files by first use; return old → new file names.

    skops names both after ``id()`` of the saved objects, which differs between processes;
    renumbering keeps which nodes share an object, and so loads the same model.
    """
    ids: dict[int, int] = {}
    files: dict[str, str] = {}
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    node[key] = ids.setdefault(value, len(ids))
                elif key == "file" and isinstance(value, str):
                    suffix = PurePosixPath(value).suffix
                    node[key] = files.setdefault(value, f"{len(files)}{suffix}")
                else:
                    stack.append(value)
    return files


def canonical_archive(data: bytes) -> bytes:
    """Return the skops archive ``data`` with members named by first use and fixed times."""
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        schema = json.loads(source.read(_SCHEMA))
        renamed = _renumber(schema)
        members: list[tuple[str, bytes, int]] = []
        for old, new in renamed.items():
            payload = source.read(old)
            if new.endswith(".npz"):
                payload = _canonical_zip(payload)
            members.append((new, payload, zipfile.ZIP_STORED))
        for other in sorted(set(source.namelist()) - set(renamed) - {_SCHEMA}):
            members.append((other, source.read(other), zipfile.ZIP_STORED))
    members.append((_SCHEMA, json.dumps(schema, indent=2).encode(), zipfile.ZIP_STORED))
    return _write_zip(members)


# -- the flavor -----------------------------------------------------------------------------

def _unimportable(names: list[str]) -> list[str]:
    """Return the names a loading process could never import (``__main__``, lambdas, locals)."""

    def lost(name: str) -> bool:
        module_name, _, attr = name.rpartition(".")
        module = sys.modules.get(module_name)
        missing = module is not None and not hasattr(module, attr)  # defined in a function
        return module_name == "__main__" or "<" in name or missing

    return sorted(filter(lost, names))


class SklearnFlavor:
    """scikit-learn and compatible estimators (pipelines included), stored with skops."""

    name = "sklearn"

    def accepts(self, model: object) -> bool:
        """Tell whether ``model`` is a scikit-learn estimator or quacks like one."""
        if isinstance(model, type):
            return False
        base = getattr(sys.modules.get("sklearn.base"), "BaseEstimator", None)
        if isinstance(base, type) and isinstance(model, base):
            return True
        has = [callable(getattr(model, method, None))
               for method in ("fit", "get_params", "predict", "transform")]
        return has[0] and has[1] and (has[2] or has[3])

    def save(self, model: Any) -> bytes:
        """Return ``model`` as a canonical skops archive.

        Raises:
            InvalidArgumentError: when ``model`` is not an estimator, skops cannot store it,
                or it refers to something no other process could import (a lambda, say).
        """
        kind = type(model).__name__
        if not self.accepts(model):
            raise InvalidArgumentError("model", f"a {kind} is not a scikit-learn-compatible "
                                                "estimator; use the 'python' flavor")
        skops_io = _skops_io()
        try:
            data = skops_io.dumps(model)
        except (TypeError, ValueError) as exc:  # skops' UnsupportedTypeException is a TypeError
            raise InvalidArgumentError("model", f"skops cannot store this {kind} ({exc}); "
                                                "use the 'onnx' or 'python' flavor") from exc
        lost = _unimportable(list(skops_io.get_untrusted_types(data=data)))
        if lost:
            raise InvalidArgumentError(
                "model", f"the {kind} refers to {', '.join(lost)}, which a loading process "
                         "cannot import; define it at module level in an importable module")
        return canonical_archive(data)

    def load(self, data: bytes, trust: TrustContext) -> EstimatorModel:
        """Return the estimator in ``data`` once every type it names is trusted.

        Raises:
            UntrustedModelError: naming the types outside the allow list and ``trust``,
                before anything from the archive is constructed.
            IntegrityError: when ``data`` is not a readable skops archive.
            ConfigurationError: when the model needs a module this environment lacks.
        """
        reported = _reported(data)
        refused = sorted(name for name in reported if not _trusted(name, trust))
        if refused:
            raise UntrustedModelError(
                self.name, f"it needs types outside loopline's allow list: {', '.join(refused)} "
                           "(or allow exactly these with TrustContext.allowing)", tuple(refused))
        try:
            model = _skops_io().loads(data, trusted=reported)
        except ModuleNotFoundError as exc:
            raise ConfigurationError(f"the model needs the module {exc.name!r}, which is not "
                                     "installed here; install the packages it was trained "
                                     "with") from exc
        except (KeyError, ValueError, TypeError, AttributeError, ImportError) as exc:
            raise IntegrityError(f"the 'sklearn' artifact does not load: "
                                 f"{type(exc).__name__}: {exc}") from exc
        return EstimatorModel(self.name, model)
