"""Layer L2: dataset snapshots, profiles, validation, the prediction log, and lineage writes."""
