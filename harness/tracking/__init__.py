"""MLflow, and only here: the tracker a run logs to, the records loaded into a store, the local
tracking server, a run's figures. Imports `runs`, `training` and `config`."""
