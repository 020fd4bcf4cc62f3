"""Layer L5: the composition root. Settings are parsed once here and concrete classes chosen."""

from loopline.app.artifact_service import ArtifactService
from loopline.app.settings import Settings, load_settings
from loopline.app.status import Check, workspace_status
from loopline.app.workspace import Workspace, find_workspace

__all__ = [
    "ArtifactService",
    "Check",
    "Settings",
    "Workspace",
    "find_workspace",
    "load_settings",
    "workspace_status",
]
