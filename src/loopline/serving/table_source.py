"""Keeps the server's routing table in step with the stored deployments, off the request path.

A daemon thread polls one cheap query (deployment name to revision). When a revision
changes, it reads the deployments, loads the model versions not loaded yet (reusing those
already loaded), builds a new ``RoutingTable`` and hands it to ``on_swap``, which the app
turns into one reference assignment. Models load only here, never while answering.

Failures never reach a request: a deployment whose new versions fail to load keeps its old
routes (a new deployment stays unavailable) and is retried with backoff; a failing poll is
logged and retried at the next interval. Both are counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

from loopline.core.deployments import Deployment
from loopline.core.errors import InvalidArgumentError
from loopline.core.ports import ModelLoader, ServableModel
from loopline.serving.metrics import ServingMetrics
from loopline.serving.routing import RoutingTable

__all__ = ["DeploymentReader", "TableSource"]

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 60.0


class DeploymentReader(Protocol):
    """The reads the table source needs (``store.deployment_queries.DeploymentQueries``)."""

    def revisions(self) -> Mapping[str, int]:
        """Return every deployment's name and revision (one cheap query)."""
        ...

    def list(self) -> Sequence[Deployment]:
        """Return every deployment."""
        ...


class TableSource:
    """Builds routing tables from stored deployments and swaps in new ones as they change.

    ``deployments`` limits the server to those names (all when None). ``metrics``, when
    given, counts swaps and load failures. Call ``load_initial`` once (it starts the poll
    thread) and ``close`` at shutdown.

    Raises:
        InvalidArgumentError: for a non-positive ``poll_seconds``.
    """

    def __init__(self, queries: DeploymentReader, loader: ModelLoader,
                 on_swap: Callable[[RoutingTable], None], poll_seconds: float = 0.5,
                 deployments: Sequence[str] | None = None,
                 metrics: ServingMetrics | None = None) -> None:
        if not poll_seconds > 0:
            raise InvalidArgumentError("poll_seconds", f"{poll_seconds!r} must be > 0")
        self._queries = queries
        self._loader = loader
        self._on_swap = on_swap
        self._poll = float(poll_seconds)
        self._names: Collection[str] | None = None if deployments is None else \
            frozenset(deployments)
        self._metrics = metrics
        self._models: dict[str, ServableModel] = {}
        self._failed: dict[str, tuple[int, float]] = {}  # uri -> (attempts, retry at)
        self._table: RoutingTable | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps = 0
        self.load_failures = 0
        self.poll_failures = 0

    @property
    def table(self) -> RoutingTable | None:
        """The latest table built (None before ``load_initial``)."""
        return self._table

    def load_initial(self) -> RoutingTable:
        """Build the first table (blocking) and start the poll thread.

        Raises:
            BackendError: when the deployments cannot be read.
        """
        with self._lock:
            self._table = self._build(self._wanted(self._queries.list()))
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._loop, name="loopline-table-source",
                                            daemon=True)
            self._thread.start()
        return self._table

    def poll_once(self) -> bool:
        """Check the revisions once; build and swap in a new table when they moved.

        Returns whether a new table was swapped in.

        Raises:
            BackendError: when the deployments cannot be read.
        """
        with self._lock:
            current = self._table
            revisions = {name: rev for name, rev in self._queries.revisions().items()
                         if self._names is None or name in self._names}
            if current is not None and dict(current.revisions) == revisions and current.ready:
                return False
            table = self._build(self._wanted(self._queries.list()))
            if current is not None and dict(table.revisions) == dict(current.revisions) \
                    and table.unavailable == current.unavailable:
                return False
            self._table = table
            self.swaps += 1
        if self._metrics is not None:
            self._metrics.table_swapped()
        log.info("routing table swapped: %s", dict(table.revisions))
        self._on_swap(table)
        return True

    def close(self) -> None:
        """Stop the poll thread (at once, even mid-interval) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _wanted(self, deployments: Sequence[Deployment]) -> list[Deployment]:
        return [d for d in deployments if self._names is None or d.name in self._names]

    def _build(self, deployments: Sequence[Deployment]) -> RoutingTable:
        """Return the table of ``deployments``; a deployment that fails keeps its old routes."""
        current = self._table
        chosen: list[Deployment] = []
        for deployment in deployments:
            if self._load(deployment) or current is None or \
                    deployment.name not in current.deployments():
                chosen.append(deployment)  # loaded, or unavailable until its models load
            else:
                chosen.append(current.deployment(deployment.name))
        table = RoutingTable.build(chosen, self._models)
        keep = set(table.models()) | {r.uri for d in deployments for r in d.routes}
        for uri in [uri for uri in self._models if uri not in keep]:
            del self._models[uri]  # in-flight requests still hold the old table's models
        return table

    def _load(self, deployment: Deployment) -> bool:
        """Load the deployment's versions not loaded yet; False when one could not be."""
        ok = True
        for route in deployment.routes:
            uri = route.uri
            if uri in self._models:
                continue
            attempts, retry_at = self._failed.get(uri, (0, 0.0))
            if time.monotonic() < retry_at:
                ok = False
                continue
            try:
                self._models[uri] = self._loader.servable(route.model, route.version)
            except Exception:  # any failure keeps the old routes; the server keeps answering
                attempts += 1
                delay = min(self._poll * 2 ** attempts, MAX_RETRY_SECONDS)
                self._failed[uri] = (attempts, time.monotonic() + delay)
                self.load_failures += 1
                if self._metrics is not None:
                    self._metrics.load_failed()
                log.exception("could not load %s for deployment %r (attempt %d, retry in "
                              "%.1f s)", uri, deployment.name, attempts, delay)
                ok = False
            else:
                self._failed.pop(uri, None)
        return ok

    def _loop(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self.poll_once()
            except Exception:  # the database may be away; keep the table and poll again
                self.poll_failures += 1
                log.exception("could not poll deployments; keeping the current routing table")
