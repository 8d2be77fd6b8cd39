"""Running runs: `run.execute` takes one self-contained run spec to an outcome; `queue` hands study runs
to workers; `launcher` prepares a study and starts `worker`s; `key_lock` keeps one run key to one trainer."""
