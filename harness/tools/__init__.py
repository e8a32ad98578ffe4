"""Tools beside the experiments: the speed measurements and their unfused yardstick, and the GPU
kit. Import `runs`, `training` and `config`."""
