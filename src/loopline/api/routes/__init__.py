"""The API's routers, one module per resource; ``create_api`` mounts each under ``/api/v1``."""

from __future__ import annotations

from fastapi import APIRouter

from loopline.api.routes import (
    audit,
    datasets,
    deployments,
    governance_access,
    governance_approvals,
    governance_policies,
    governance_records,
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
    deployments.router, monitoring.router, governance_approvals.router,
    governance_policies.router, governance_access.router, governance_records.router,
    lineage.router, audit.router)

__all__ = ["ROUTERS"]
