"""``python -m klcli``."""

from klcli.cli import run

run()
