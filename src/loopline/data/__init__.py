"""Layer L2: dataset snapshots, profiles, validation, the prediction log, lineage writes.

Also provenance: code versions and environment locks, shared by pipeline runs and models.
"""
