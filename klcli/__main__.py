"""``python -m klcli``: the entry point imports nothing heavy before its signal handling is in place."""

from klcli.streams import run

if __name__ == "__main__":
    run()
