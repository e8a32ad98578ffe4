"""`m2h`, the command line (`harness.cli.main`): the one layer that imports every other."""
