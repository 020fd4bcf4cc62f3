"""The artifact catalogue: which digests the workspace has recorded, by whom and when."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from loopline.store.models import ArtifactRow


def record_if_new(session: Session, digest: str, size: int, actor: str, at: datetime) -> bool:
    """Add ``digest`` to the catalogue in the caller's transaction; False if it was there.

    Call it after ``UnitOfWork.serialise()``: the append lock (PostgreSQL) or the write lock
    (SQLite) makes two concurrent puts of the same bytes record it once.
    """
    if session.get(ArtifactRow, digest) is not None:
        return False
    session.add(ArtifactRow(digest=digest, size=size, created_at=at, created_by=actor))
    session.flush()
    return True
