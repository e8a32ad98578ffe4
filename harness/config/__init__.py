"""What to run: the variants and their registry, the built-in zoo, the search spaces, the ablation
files' schema, and the keys that name runs, cells and ablations. Plain Python (no torch); imports
nothing of the harness but this layer."""
