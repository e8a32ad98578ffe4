"""Tables, plots and statistics of an ablation, rebuilt from its run records (pandas, seaborn,
scipy, statsmodels). Imports `runs`, `training` (the stop rule's outcomes) and `config`."""
