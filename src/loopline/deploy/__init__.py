"""Deployments, the control plane of serving: routes, strategies, promotion and rollback.

Routes split traffic between model versions under a strategy (replace, canary, A/B,
shadow); promotion, rollback and their history live here, behind the gate. A peer of
``registry`` and ``governance``: it reads model versions through the store and asks the
``Gate`` port (``deploy`` and ``rollout_step``) before every change.
"""
