"""Benchmarks: zerovisor's costs measured beside native execution and runc in the same run.

`python -m bench` owns nothing the services use. It builds its static C helpers (bench/c/),
starts a set of services on a run directory of its own, runs each case of `bench.cases`
several times after a warm-up, and prints medians with their ratios to baselines measured in
the same run, because this machine is shared and noisy: an absolute number from another day
means little, a ratio measured side by side does.
"""
