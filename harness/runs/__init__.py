"""One run end to end: train a variant's seeds, checkpoint them, leave a run record; where a run
was made (provenance); claims, so a run is trained by one process at a time. Imports `training`
and `config`; tracking is a part it is handed (`runs.runner.RunLog`), never imported."""
