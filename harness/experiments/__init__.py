"""Experiments: ablations (plan, jobs, local workers, the Slurm launcher, status) and Optuna
searches. Imports every layer below it: `reporting`, `tracking`, `runs`, `training`, `config`."""
