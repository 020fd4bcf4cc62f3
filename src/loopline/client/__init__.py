"""Layer L6: the Python client of the control plane, with the surface of a ``Workspace``.

``loopline.connect(url, token=...)`` builds a ``Client``; nothing here touches the store.
"""

from loopline.client.client import Client

__all__ = ["Client"]
