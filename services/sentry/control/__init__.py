"""The sentry's control surface: one RPC domain per module, as gVisor's pkg/sentry/control.

lifecycle.py  Lifecycle: create, start, signal, pause, resume, delete, status of containers
proc.py       Proc: the processes of a container (ps)
"""
