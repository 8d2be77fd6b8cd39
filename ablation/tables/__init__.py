"""Paper-style tables: `build` lays a study's runs (a DataFrame from the tracking reader) out as the
paper's table; `render` writes it as md, LaTeX, CSV or HTML. Nothing here talks to MLflow."""
