"""One module per `controller` command, each exposing a click command named ``cli``.

base.py    what every command's CLI half shares (CliContext, the --run-dir option)
up.py      start the four services
down.py    stop them
status.py  show them
serve.py   run the controller service itself in the foreground
"""
