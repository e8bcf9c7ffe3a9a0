"""``python -m klcli``."""

from klcli.boundary import run

run()
