"""Fault-injection tests: kill -9 services during a workload, restart them, check nothing is lost.

DESIGN.md's "Independent restart" promises that each service can be killed and restarted without
losing a container or a byte written. These tests hold it to that: harness.py has the machinery
(kill, restart, census of our processes, state and leak checks), workload.py the container
workload, the exec driver and the scenarios, and each test module names a service.

Run them with ``.venv/bin/python -m pytest -n 2 tests/faults``; reproduce a run's random kill
schedule with ``ZEROVISOR_FAULT_SEED=<seed>`` (every failure report shows the seed).
"""
