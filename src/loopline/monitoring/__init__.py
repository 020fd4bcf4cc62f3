"""Monitoring: drift, quality on slices and health over windows, and alert-rule evaluation.

Reads what the platform recorded (model versions' reference profiles, the prediction log
with its feedback labels, the servers' stats) and never the request path.
"""
