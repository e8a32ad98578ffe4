"""Training: the data on the device, the M2 networks, the loss, the schedules, one seed's step
and several seeds' stacked step, the one training loop, the stop rule and the checkpoints.
torch only (no MLflow, no Optuna); imports `config` and `harness.files`."""
