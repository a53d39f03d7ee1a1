"""controller: the container registry, OCI bundle handling, orchestration, and the CLI.

Layout:
    __main__.py   the `controller` console script (`python -m services.controller`)
    cli.py        the click group: global flags, lazy loading of commands, the error -> exit code edge
    commands/     one module per command (`up`, `down`, `status`, `serve`, ...)
    services.py   ServiceManager: finds, starts, probes and stops the four services of a run directory

The CLI half of a command never imports the daemon side, and `controller --help` imports
neither zmq nor cbor2: a command pays for what it uses.
"""
