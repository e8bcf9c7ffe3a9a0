"""Writing a result to ``-o FILE``: atomically, and never over an input."""

from __future__ import annotations

import os
import tempfile

from klcli.errors import UsageError


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def input_paths(operands: list[str]) -> list[str]:
    """The files operands read (``FILE:SELECTOR`` reads FILE)."""
    return [operand if os.path.exists(operand) else operand.split(":", 1)[0] for operand in operands]


def check_output_path(path: str, operands: list[str]) -> None:
    """Refuse an output path that is one of the inputs, or that cannot be written."""
    for source in input_paths(operands):
        if source is not None and os.path.exists(source) and _same_file(path, source):
            raise UsageError(f"-o {path}: is one of the inputs; klcli never overwrites its inputs")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"-o {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"-o {path}: is a directory; name a file")


def write_atomically(path: str, text: str) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    An interrupted write leaves the old file (or none) in place, never half a result.
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".klcli-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
