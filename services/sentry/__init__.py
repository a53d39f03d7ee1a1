"""sentry: the application kernel. It owns the per-container state machine and task table, the seccomp
user-notification listener fds of every sandboxed task and the syscall handlers behind them,
process listing, signals and container events.

So far it answers only the System domain every service has (common.system).

Layout:
    __main__.py  the `sentry` console script (`python -m services.sentry`)
"""
