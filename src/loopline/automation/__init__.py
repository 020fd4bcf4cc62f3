"""Playbooks: what runs when an alert fires (retrain, rollback, quarantine, notify).

Actions run durably off the event log, each exactly once per alert, within policy.
"""
