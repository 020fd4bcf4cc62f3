"""`/deployments` routes of the API."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/deployments", tags=["deployments"])
