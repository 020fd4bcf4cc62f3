"""Run task attempts as Ray tasks: the driver sends a small call, workers use the artifact store.

Each attempt is one Ray task (``max_retries=0``: the engine does the retrying) that runs
``execute_call`` on a Ray worker. Inputs and outputs travel through the artifact store, so only
the small ``TaskCall`` and ``CallResult`` pass through Ray; the store must be reachable from
every worker (``memory://`` is refused; a local path works on a one-machine Ray only).

Shipping the function. Ray workers import loopline and installed packages, but not what the
driver imported from anywhere else: test modules, ``loopline run FILE.py`` and modules beside
it, a project that is only on ``sys.path``. Every such *local* module (a ``.py`` file outside
the interpreter's library paths and outside any site-packages folder; never loopline itself) is
registered with cloudpickle's ``register_pickle_by_value``, so the task's function and the
local helpers, classes and constants it reads travel as code: module-level tasks, closures and
tasks defined inside a function all work, on any cluster. The registration is process-wide
(cloudpickle keeps one registry); it only makes those modules' objects travel by value. When
the function cannot be pickled (it reads a lock, a connection...), the call falls back to its
``TaskLocator`` (module, qualname, file), which a worker sharing the driver's filesystem
imports. The call is pickled here, into bytes the worker unpickles inside the task, so a
function that cannot be loaded there fails its attempt with the real error (for example
``ModuleNotFoundError``) instead of a Ray system error.

Timeouts count from when a worker starts the attempt, not from submission: the Ray task is a
streaming generator that first yields a start marker, so waiting in Ray's queue for a free CPU
never times an attempt out. An attempt past its timeout is cancelled with ``force=True`` (its
worker process is killed) and ends with ``AttemptTimeoutError``; a worker that died (crash,
out-of-memory kill, cancellation, lost node) ends it with ``WorkerLostError``.
"""

from __future__ import annotations

import os
import pickle
import sys
import sysconfig
import threading
from collections.abc import Iterator
from functools import cache
from types import ModuleType
from typing import Any

from loopline.core.errors import ConfigurationError, InvalidArgumentError
from loopline.pipelines.remote import (
    AttemptTimeoutError,
    CallResult,
    RemoteTaskFailure,
    TaskCall,
    WorkerLostError,
    execute_call,
)

ADDRESS_VARIABLE = "LOOPLINE_RAY_ADDRESS"
NO_RAY = "the ray executor needs the ray extra: pip install 'loopline[ray]'"
_INSTALLED_FOLDERS = frozenset({"site-packages", "dist-packages"})


class RayInvoker:
    """Runs each task attempt as a Ray task, on the running Ray or on a local one it starts."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, *,
                 task_cpus: float = 1.0) -> None:
        """Prepare the invoker; Ray is joined (or started) on the first call.

        When Ray is already initialised in this process it is used as it is. Otherwise
        ``address`` (or ``LOOPLINE_RAY_ADDRESS``) names a cluster to join, and without one a
        local Ray is started with ``num_cpus`` CPUs (all of them when None); ``close`` shuts
        down only a Ray this invoker started. ``task_cpus`` is what each attempt reserves.

        Raises:
            ConfigurationError: when ray is not installed.
            InvalidArgumentError: when ``num_cpus`` or ``task_cpus`` is not positive.
        """
        self._ray = _import_ray()
        if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int)
                                     or num_cpus < 1):
            raise InvalidArgumentError("num_cpus", "must be a positive integer or None")
        if isinstance(task_cpus, bool) or not isinstance(task_cpus, int | float) or not (
                task_cpus > 0):
            raise InvalidArgumentError("task_cpus", "must be a positive number")
        self.address = address or os.environ.get(ADDRESS_VARIABLE) or None
        self.num_cpus = num_cpus
        self.task_cpus = float(task_cpus)
        self._lock = threading.Lock()
        self._remote: Any = None
        self._plain: Any = None
        self._started = False
        self._shipper = _Shipper(self._ray.cloudpickle)

    def invoke(self, call: TaskCall, timeout: float | None) -> CallResult:
        """Run ``call`` on a Ray worker and wait for its end (never longer than ``timeout``).

        Errors of the attempt come back in the result: the task's own exception as a
        ``RemoteTaskFailure``, ``AttemptTimeoutError`` or ``WorkerLostError``.

        Raises:
            InvalidArgumentError: when the artifact store lives in this process (``memory://``),
                or the task can be neither pickled nor imported by a worker.
        """
        _require_reachable_store(call)
        payload = self._shipper.payload(call)
        ray = self._ray
        if timeout is None:  # no start marker needed: one round trip, as a bare Ray task
            ref = self._started_remote(streaming=False).remote(payload)
            try:
                plain: CallResult = ray.get(ref)
            except ray.exceptions.RayError as exc:
                return CallResult(error=_attempt_error(ray, call, exc))
            except BaseException:
                ray.cancel(ref, force=True)
                raise
            return plain
        stream = self._started_remote().remote(payload)
        try:
            ray.get(next(stream))  # the start marker: the attempt is running on a worker
            ready, _ = ray.wait([stream], timeout=timeout)
            if not ready:
                ray.cancel(stream, force=True)  # kills the worker process
                return CallResult(error=AttemptTimeoutError(
                    f"task {call.task_key!r} (attempt {call.attempt}) ran longer than its "
                    f"timeout of {timeout:g} s; its Ray worker was stopped"))
            result: CallResult = ray.get(next(stream))
        except ray.exceptions.RayError as exc:
            return CallResult(error=_attempt_error(ray, call, exc))
        except BaseException:  # interrupted here (Ctrl-C): leave no attempt running unseen
            ray.cancel(stream, force=True)
            raise
        return result

    def close(self) -> None:
        """Shut down Ray if this invoker started it; a Ray it joined keeps running."""
        with self._lock:
            self._remote = None
            if self._started:
                self._started = False
                self._ray.shutdown()

    def _started_remote(self, streaming: bool = True) -> Any:
        """Return the remote function, initialising Ray first when it is not running.

        ``streaming`` yields a start marker first (a timeout counts from it); otherwise the
        function returns the result alone.
        """
        with self._lock:
            if not self._ray.is_initialized():
                options: dict[str, Any] = {"address": self.address, "include_dashboard": False,
                                           "log_to_driver": False}
                if self.address is None and self.num_cpus is not None:
                    options["num_cpus"] = self.num_cpus
                self._ray.init(**options)
                self._started = True
            if self._remote is None:
                self._remote = self._ray.remote(num_cpus=self.task_cpus, max_retries=0,
                                                num_returns="streaming")(_attempt_on_worker)
                self._plain = self._ray.remote(num_cpus=self.task_cpus,
                                               max_retries=0)(_attempt_on_worker_plain)
            return self._remote if streaming else self._plain


def _attempt_on_worker(payload: bytes) -> Iterator[CallResult | None]:
    """Yield a start marker, then run the pickled call on this worker and yield its result."""
    yield None
    try:
        call: TaskCall = pickle.loads(payload)  # our own bytes, from our driver
    except Exception as exc:  # noqa: BLE001 - unpickling imports and runs user code
        yield CallResult(error=RemoteTaskFailure.from_exception(exc))
        return
    yield execute_call(call).for_process()


def _attempt_on_worker_plain(payload: bytes) -> CallResult:
    """Run the pickled call on this worker and return its result."""
    for item in _attempt_on_worker(payload):
        if item is not None:
            return item
    return CallResult(error=WorkerLostError("the attempt ended without a result"))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigurationError(NO_RAY) from exc
    return ray


def _require_reachable_store(call: TaskCall) -> None:
    if call.blobs.in_memory:
        raise InvalidArgumentError(
            "executor", f"task {call.task_key!r} cannot run on Ray with the artifact store "
            f"{call.blobs.url!r}: the ray executor needs an artifact store its workers can "
            "reach; memory:// lives inside one process (use a local path or an object store)")


def _attempt_error(ray: Any, call: TaskCall, exc: BaseException) -> BaseException:
    """Map a Ray error to the attempt's error: the task's own exception, or a lost worker."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, BaseException) and (
            not isinstance(cause, ray.exceptions.RayError)):
        return RemoteTaskFailure.from_exception(cause)
    summary = (str(exc).strip().splitlines() or [""])[0]
    lost = WorkerLostError(f"the Ray worker running task {call.task_key!r} (attempt "
                           f"{call.attempt}) was lost: {type(exc).__name__}: {summary}")
    lost.__cause__ = exc
    return lost


class _Shipper:
    """Pickles calls for Ray workers, local modules by value (see the module docstring)."""

    def __init__(self, cloudpickle: Any) -> None:
        self._cloudpickle = cloudpickle
        self._examined: set[str] = set()
        self._lock = threading.Lock()

    def payload(self, call: TaskCall) -> bytes:
        """Return ``call`` pickled, with its function by value or else by its location.

        Raises:
            InvalidArgumentError: when the function can be neither pickled nor located.
        """
        self._register_local_modules()
        try:
            return bytes(self._cloudpickle.dumps(call))
        except Exception as exc:  # noqa: BLE001 - user objects can fail to pickle in any way
            pickling_error = exc
        try:
            return bytes(self._cloudpickle.dumps(call.for_process()))
        except Exception as exc:  # noqa: BLE001 - as above, for the arguments
            raise InvalidArgumentError(
                f"task {call.task_key!r}", "cannot be sent to Ray workers: pickling it failed "
                f"({type(pickling_error).__name__}: {pickling_error}) and so did importing it "
                f"by location ({type(exc).__name__}: {exc})") from pickling_error

    def _register_local_modules(self) -> None:
        with self._lock:
            fresh = [name for name in list(sys.modules) if name not in self._examined]
            for name in fresh:
                self._examined.add(name)
                module = sys.modules.get(name)
                if isinstance(module, ModuleType) and _is_local(module):
                    try:
                        self._cloudpickle.register_pickle_by_value(module)
                    except ValueError:  # listed under another name than its own
                        continue


def _is_local(module: ModuleType) -> bool:
    """Tell whether ``module`` is a source file Ray workers may be unable to import."""
    name = getattr(module, "__name__", None)
    if not isinstance(name, str) or name == "__main__" or name.partition(".")[0] == "loopline":
        return False
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return False
    path = os.path.abspath(file)
    if _INSTALLED_FOLDERS.intersection(path.split(os.sep)):
        return False
    return not any(path.startswith(root) for root in _library_roots())


@cache
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {os.path.abspath(paths[key]) for key in ("stdlib", "platstdlib", "purelib",
                                                      "platlib") if key in paths}
    return tuple(root.rstrip(os.sep) + os.sep for root in sorted(roots))
