"""The model server, the data plane: answers requests from an in-memory routing table.

It speaks the Open Inference Protocol v2, MLflow's ``/invocations`` and
``/predict/{deployment}``; the routing table is swapped atomically when deployments change,
and the request path never waits on the metadata store. A peer of ``registry`` and
``deploy``: models come through the ``ModelLoader`` port (``core.ports``), deployment state
through the store, prediction logging through ``data``.
"""
