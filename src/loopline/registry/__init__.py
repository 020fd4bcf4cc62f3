"""Layer L3: the model registry: versions, aliases, safe formats, signatures, environments.

Imports only ``loopline.core``, ``loopline.store``, ``loopline.artifacts`` and ``data``; a peer
of ``pipelines`` (they never import each other).
"""
