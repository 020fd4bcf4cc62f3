"""Layer L6: the control-plane HTTP API (FastAPI under ``/api/v1``) over one workspace.

``create_api(workspace)`` builds the app; ``loopline server`` runs it with the background
work of the loop (``api.background``).
"""

from loopline.api.app import ApiOptions, create_api

__all__ = ["ApiOptions", "create_api"]
