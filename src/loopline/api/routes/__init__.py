"""The API's routers, one module per resource; ``create_api`` mounts each under ``/api/v1``."""

from __future__ import annotations

from fastapi import APIRouter

from loopline.api.routes import (
    audit,
    datasets,
    deployments,
    governance,
    health,
    lineage,
    models,
    monitoring,
    runs,
    tokens,
    whoami,
)

ROUTERS: tuple[APIRouter, ...] = (
    health.router, whoami.router, tokens.router, datasets.router, runs.router, models.router,
    deployments.router, monitoring.router, governance.router, lineage.router, audit.router)

__all__ = ["ROUTERS"]
