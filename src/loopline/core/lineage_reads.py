"""Who read what: a hook through which readers of recorded data tell the running task.

Pure: no I/O. The data layer calls ``note_read`` whenever it reads a recorded node (a dataset
snapshot, a partition); a pipeline task's context listens while the task runs, so the run's
lineage gets the edge ``snapshot → task run`` without the task saying anything. Outside a
task nothing listens and a note costs one context-variable lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from loopline.core.lineage import NodeRef

_LISTENER: ContextVar[Callable[[NodeRef], None] | None] = ContextVar(
    "loopline_lineage_reads", default=None)


def note_read(ref: NodeRef) -> None:
    """Tell whoever listens in this context that ``ref`` was read."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(ref)


@contextmanager
def listening_for_reads(listener: Callable[[NodeRef], None]) -> Iterator[None]:
    """Send every ``note_read`` in this context to ``listener`` until the block ends."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)
