"""What a user watches while runs go: `run_progress` (one training's bar), `study_progress` (a study's panel)."""
