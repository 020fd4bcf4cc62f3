"""Scoring batch chunks as Ray tasks: the model's bytes go to the object store once.

The driver reads the version's artifact through the verifying content store and ``ray.put``s
the bytes once; each task gets a reference to them (nested in a list, so Ray does not fetch
them for every task) with the version's digest, flavor and trust context. A worker process
loads the model the first time it sees a digest and keeps it (a few, least recently used
first out), so a long run loads the model once per worker, not once per chunk. No pickle of
a model object crosses processes: a worker loads the artifact as the registry would, with
the same audited trust decision.

Ray is joined when it already runs in this process, else started (``address``: a cluster to
join; None: a local Ray), and shut down at the end only when started here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import pyarrow as pa

from loopline.core.errors import BackendError, ConfigurationError
from loopline.core.models import ModelVersion
from loopline.core.ports import BlobStore
from loopline.registry.batch_chunks import ChunkOutput, ChunkSpec, Pending, score_chunk
from loopline.registry.flavors import LoadedModel, TrustContext, flavor_named
from loopline.registry.loading import read_artifact

NO_RAY = "scoring on Ray needs the ray extra: pip install 'loopline[ray]'"
CACHE_SIZE = 4
_CACHE: OrderedDict[str, LoadedModel] = OrderedDict()  # per worker process, by digest
_CACHE_LOCK = threading.Lock()


def import_ray() -> Any:
    """Return the ``ray`` module.

    Raises:
        ConfigurationError: naming the extra to install when ray is not installed.
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigurationError(NO_RAY) from exc
    return ray


def ensure_ray(ray: Any, address: str | None) -> bool:
    """Join or start Ray unless it runs in this process; tell whether it was started here."""
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return True


def _model(artifact: list[Any], key: tuple[str, str], trust: TrustContext) -> LoadedModel:
    digest, flavor = key
    with _CACHE_LOCK:
        found = _CACHE.get(digest)
        if found is not None:
            _CACHE.move_to_end(digest)
            return found
    import ray

    model = flavor_named(flavor).load(ray.get(artifact[0]), trust)
    with _CACHE_LOCK:
        _CACHE[digest] = model
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return model


def _score_on_worker(artifact: list[Any], key: tuple[str, str], trust: TrustContext,
                     spec: ChunkSpec, features: pa.Table) -> ChunkOutput:
    """Load (or reuse) the model on this worker and score one chunk."""
    try:
        model = _model(artifact, key, trust)
    except Exception as exc:  # noqa: BLE001 - reported to the driver as data
        return ChunkOutput(None, failure=f"loading the model on a Ray worker failed: "
                                         f"{type(exc).__name__}: {exc}")
    return score_chunk(model, spec, features)


class RayScorer:
    """A batch-scoring backend whose chunks run as Ray tasks, twice the CPUs in flight."""

    def __init__(self, version: ModelVersion, blobs: BlobStore, trust: TrustContext,
                 spec: ChunkSpec, address: str | None) -> None:
        """Join or start Ray and put the version's verified artifact in the object store.

        Raises:
            ConfigurationError: when ray is not installed.
            IntegrityError: when the artifact is missing or altered.
        """
        self._ray = import_ray()
        artifact = read_artifact(blobs, version)
        self._started = ensure_ray(self._ray, address)
        self._spec = spec
        self._trust = trust
        self._key = (version.artifact_digest, version.flavor)
        self._uri = version.uri
        self._artifact = [self._ray.put(artifact)]
        self._remote = self._ray.remote(num_cpus=1, max_retries=2)(_score_on_worker)
        cpus = int(self._ray.cluster_resources().get("CPU", 1))
        self.window = max(2, 2 * cpus)
        self._open: dict[Any, None] = {}  # submitted, not yet collected (ordered)

    def submit(self, features: pa.Table) -> Pending:
        """Start a Ray task scoring ``features``."""
        ref = self._remote.remote(self._artifact, self._key, self._trust, self._spec, features)
        self._open[ref] = None
        return lambda: self._collect(ref)

    def _collect(self, ref: Any) -> ChunkOutput:
        self._open.pop(ref, None)
        try:
            output: ChunkOutput = self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:
            summary = (str(exc).strip().splitlines() or [""])[0]
            raise BackendError(f"a Ray task scoring with {self._uri} was lost: "
                               f"{type(exc).__name__}: {summary}") from exc
        return output

    def close(self) -> None:
        """Cancel the tasks not collected; shut Ray down if it was started here."""
        for ref in list(self._open):
            self._ray.cancel(ref)
        self._open.clear()
        self._artifact = []
        if self._started:
            self._started = False
            self._ray.shutdown()
