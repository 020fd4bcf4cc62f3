"""Governance: roles, policies as code, approvals, retention, completeness, OpenLineage.

Who may do what (roles), what must hold at each gate (policies as code), who signed off
(approvals), how long data is kept (retention and legal holds), and how complete the record
is (the governance report, OpenLineage export).

A peer of ``pipelines`` and ``registry``: it reads their records through the store and
implements the registry's ``Gate`` port; the composition root (``app.workspace``) wires it.
"""
