"""Writing a result to ``-o FILE``: atomically for files, directly for devices and pipes, never over an input.

* ``-o -`` is standard output, and ``/dev/stdout``, ``/dev/stderr`` and
  ``/dev/fd/N`` are the descriptor itself (written in place, never replaced).
* A FIFO or a character device (``/dev/null``, a terminal) is written into
  directly; it is never replaced by a regular file. Sockets, block devices and
  folders are refused.
* A regular file (or a new one) is written through a temporary file in the
  same folder and renamed over it, with signals held off meanwhile, so an
  interruption leaves the old file or the new one and no temporary file. A
  symlink is followed (the file behind it is replaced, the link kept). The
  new file gets the mode ``open()`` would give it (0o666 less the umask); an
  existing file keeps its mode.
* Inputs are protected by identity (device and inode), resolved exactly as
  the readers resolve their operands, standard input included.
* Every failure is :class:`~klcli.errors.OutputError`: ``-o PATH: reason``.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import stat
import threading
from collections.abc import Callable, Iterable

from klcli.errors import OutputError, UsageError

_DESCRIPTOR = re.compile(r"^/(?:dev/fd|proc/(?:self|thread-self)/fd)/(\d+)$")
_STANDARD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_HELD_SIGNALS = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name)}


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def descriptor_of(path: str) -> int | None:
    """The open descriptor a path names (``-``, ``/dev/stdout``, ``/dev/fd/3``), or None."""
    if path == "-":
        return 1
    for _ in range(40):  # follow /dev/stdout -> /proc/self/fd/1 and the like, but not a descriptor's own target
        if path in _STANDARD:
            return _STANDARD[path]
        match = _DESCRIPTOR.match(path)
        if match:
            return int(match.group(1))
        try:
            target = os.readlink(path)
        except (OSError, ValueError):
            return None
        path = os.path.join(os.path.dirname(path), target)
    return None


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def input_identities(operands: Iterable[str]) -> dict[tuple[int, int], str]:
    """(device, inode) of every file the operands read, standard input included, by how to name it."""
    from klcli.errors import InputError
    from klcli.io.operand import split_operand
    from klcli.io.shards import shard_paths

    found: dict[tuple[int, int], str] = {}
    for operand in operands:
        if not isinstance(operand, str):
            continue
        try:
            shards = shard_paths(operand)
        except InputError:  # (a pattern matching nothing reads nothing; the reader says so)
            shards = []
        for path in shards if shards is not None else [operand]:
            try:
                if path == "-":
                    info = os.fstat(0)
                    name = "standard input"
                else:
                    if shards is None:
                        path, _selector = split_operand(path)
                        if path is None:
                            continue
                    info, name = os.stat(path), path
            except (OSError, ValueError):
                continue
            if stat.S_ISREG(info.st_mode) or stat.S_ISBLK(info.st_mode):
                found.setdefault(_identity(info), name)
    return found


def check_output_path(path: str, operands: Iterable[str], *, option: str = "-o") -> None:
    """Refuse, before any work, an ``-o`` target that is an input, or that cannot be a place to write."""
    if path == "":
        raise OutputError(f"{option} '': names no file; give a file name, or '-' for standard output")
    if "\x00" in path:
        raise OutputError(f"{option} {path!r}: a file name cannot hold a NUL character")
    inputs = input_identities(operands)
    descriptor = descriptor_of(path)
    try:
        info = os.fstat(descriptor) if descriptor is not None else os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        if descriptor is not None:
            which = "standard output" if descriptor == 1 else f"descriptor {descriptor}"
            raise OutputError(f"{option} {path}: {which} is not open ({_reason(exc)})") from None
        raise OutputError(f"{option} {path}: {_reason(exc)}") from None
    if info is not None:
        if _identity(info) in inputs and (stat.S_ISREG(info.st_mode) or stat.S_ISBLK(info.st_mode)):
            named = inputs[_identity(info)]
            also = "" if named == path else f" ({named})"
            raise UsageError(f"{option} {path}: is one of the inputs{also}; klcli never overwrites its inputs")
        _refuse_kind(path, info.st_mode, option)
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"{option} {path}: the folder {folder} does not exist")


def _refuse_kind(path: str, mode: int, option: str) -> None:
    if stat.S_ISDIR(mode):
        raise OutputError(f"{option} {path}: is a directory; name a file")
    if stat.S_ISSOCK(mode):
        raise OutputError(f"{option} {path}: is a socket; name a file, a pipe or '-'")
    if stat.S_ISBLK(mode):
        raise OutputError(f"{option} {path}: is a block device; klcli does not write a report onto a disk")


def write_result(path: str, text: str | bytes, *, stdout=None, option: str = "-o") -> None:
    """Write ``text`` (or bytes: a partial file) to the ``-o`` target ``path`` (see the module's rules); errors are
    OutputError."""
    descriptor = descriptor_of(path)
    if descriptor is not None:
        return _write_descriptor(path, descriptor, text, stdout, option)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise OutputError(f"{option} {path}: {_reason(exc)}") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        _refuse_kind(path, info.st_mode, option)
        return _write_special(path, text, option)
    return write_atomically(path, text, existing=info, option=option)


def _encoded(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def _write_descriptor(path: str, descriptor: int, text: str | bytes, stdout, option: str) -> None:
    # Text goes through the stream, so its buffer and encoding are honoured.
    if descriptor == 1 and stdout is not None and isinstance(text, str):
        stdout.write(text)
        stdout.flush()
        return
    try:
        _write_all(descriptor, _encoded(text))
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"{option} {path}: {_reason(exc)}") from None


def _write_special(path: str, text: str | bytes, option: str) -> None:
    """A FIFO or character device: written into, never replaced."""
    try:
        descriptor = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise OutputError(f"{option} {path}: {_reason(exc)}") from None
    try:
        _write_all(descriptor, _encoded(text))
    except BrokenPipeError:
        raise OutputError(f"{option} {path}: the pipe's reader has gone") from None
    except OSError as exc:
        raise OutputError(f"{option} {path}: {_reason(exc)}") from None
    finally:
        os.close(descriptor)


class _SignalsHeld:
    """Hold Ctrl-C, SIGTERM and SIGHUP off while a temporary file exists; they arrive once it is gone.

    Python runs signal handlers in the main thread between bytecodes, so the
    handlers are swapped for one that only notes the signal, and the noted
    signals are raised again, to the restored handlers, on the way out.
    """

    def __enter__(self):
        self.previous, self.pending = {}, []
        if threading.current_thread() is threading.main_thread():
            for number in _HELD_SIGNALS:
                try:
                    self.previous[number] = signal.signal(number, self._note)
                except (OSError, ValueError, TypeError):
                    pass
        return self

    def _note(self, number, _frame):
        self.pending.append(number)

    def __exit__(self, *_exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        for number in dict.fromkeys(self.pending):
            signal.raise_signal(number)
        return False


def _new_file_mode() -> int:
    """What ``open()`` gives a new file: 0o666 less the umask (read from /proc, else set and restored)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomically(path: str, text: str | bytes, existing: os.stat_result | None = None, *,
                     option: str = "-o") -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    An interrupted write leaves the old file (or none) in place, never half a
    result and never the temporary file: signals are held off until it is
    renamed or removed.
    """
    data = _encoded(text)
    atomically(path, lambda handle: _write_all(handle, data), existing, option=option)


def atomically(path: str, write: Callable[[int], None], existing: os.stat_result | None = None, *,
               option: str = "-o") -> None:
    """``write(descriptor)`` into a temporary file in ``path``'s folder, then rename it over ``path``.

    The rules of :func:`write_atomically` (mode, owner, fsync, signals held, no temporary file left).
    """
    target = os.path.realpath(path)  # a symlink is kept; the file behind it is replaced
    folder = os.path.dirname(target)
    with _SignalsHeld():
        temporary = None
        try:
            for _attempt in range(100):
                candidate = os.path.join(folder, f".klcli-{os.getpid()}-{os.urandom(4).hex()}.tmp")
                try:
                    handle = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                                     0o600)
                except FileExistsError:
                    continue
                temporary = candidate
                break
            else:
                raise OSError(errno.EEXIST, "cannot create a temporary file")
            try:
                os.fchmod(handle, (existing.st_mode & 0o7777) if existing is not None else _new_file_mode())
                if existing is not None and os.geteuid() == 0:  # root rewriting a user's file leaves it theirs
                    try:
                        os.fchown(handle, existing.st_uid, existing.st_gid)
                    except OSError:
                        pass
                write(handle)
                os.fsync(handle)
            finally:
                os.close(handle)
            os.replace(temporary, target)
            temporary = None
        except OSError as exc:
            if not os.path.isdir(folder):
                raise OutputError(f"{option} {path}: the folder {folder} does not exist (was it removed?)") from None
            raise OutputError(f"{option} {path}: {_reason(exc)}") from None
        finally:
            if temporary is not None:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass
