"""The model families, one module each, which register themselves when imported
(`harness.training.family` says what a family gives the trainer and finds the built-in ones)."""
