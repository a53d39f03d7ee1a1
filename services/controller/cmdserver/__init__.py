"""cmdserver: `controller` commands run by a warm process instead of a new interpreter.

Every `controller` command used to pay for a Python interpreter and for importing click and the
command modules (~40 ms here) before it did anything; a script that drives containers pays that
on every call. As Mercurial's chg does, a command server imports all of it once, and for each
command forks a worker that takes on the caller's files, environment, working directory and
umask and runs the very same click command line (cli.main) there. The `controller` process the
user started stays the command's process: it forwards the signals it gets to the worker, and
exits with the worker's status, or dies of the signal that killed the worker.

A caller is served only when the worker could not tell it apart: same user, groups,
capabilities, seccomp and no_new_privs state, cgroup, namespaces, root, limits and LSM label
(admission.py). Anything else, a terminal on stdio (job control and the terminal's signals
belong to the caller's session), a failure to reach the server, or ZEROVISOR_CLI_SERVER=0, and
the command runs in its own process as before.

Layout:
    protocol.py     the request and the events on the connection; the server's socket name
    client.py       the `controller` side: eligibility, the request, signals, the exit
    admission.py    whether a caller may be served
    server.py       CommandServer: accepts, admits, starts workers, relays signals and statuses
    spare.py        a worker forked ahead of its command, so that a command does not wait for the fork
    worker.py       the forked worker: takes on the caller's process state and runs the command
    __main__.py     `python -m services.controller.cmdserver KEY`, started by the first client

One server serves one installation for one user (the socket name says which), and exits after
IDLE_EXIT seconds without a command or as soon as the code it imported changes on disk.
"""
