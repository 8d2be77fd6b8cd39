"""Tracking: the only modules that talk to MLflow. `store` (workspace, store, experiments), `writer` (runs,
records, links, study parents), `reader` (runs as a DataFrame, records back from JSON)."""
