"""Optuna searches over a study's config: search files, trials through the one execution path, reports."""
