"""controller: the container registry, OCI bundle handling, orchestration, and the CLI.

Layout:
    __main__.py     the `controller` console script (`python -m services.controller`)
    cli.py          the click group: global flags, lazy loading of commands, the error -> exit code edge
    cmdserver/      the command server: a warm process whose forked workers run commands for small clients
    commands/       one module per command (`up`, `run`, `exec`, `wait`, ...): the CLI halves
    services.py     ServiceManager: finds, starts, probes and stops the four services of a run directory
    console.py      what the CLI does with a terminal's pty master
    daemon.py       set-up of the controller service
    containers.py   the Containers domain (the public API); proc.py the Proc domain
    waiters.py      Containers.Wait and Proc.WaitPid answers, settled by the sentry's events
    registry.py     the SQLite registry; reconcile.py bringing it and the sentry back into agreement
    oci.py, oci_fields.py, execs.py  OCI bundles and exec requests, resolved

The CLI half of a command never imports the daemon side. Every command talks to the controller
on its fd channel, and waiting (`run`, `wait`, `exec`) is an answer that comes late on that
channel, so only `events` imports zmq (to subscribe). A command pays only for the imports it
uses when it runs in a new interpreter (with a terminal, or no command server to take it).
"""
