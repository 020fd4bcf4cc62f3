"""Layer L2: dataset snapshots, profiles, validation, the prediction log, lineage writes, and
provenance (code versions and environment locks, shared by pipeline runs and model versions).
"""
