"""Signals and nothing lost: Ctrl-C exits 130 with one line and leaves -o untouched."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest


def _wait_until_reading_a_pipe(pid: int) -> None:
    """The readiness handshake: the kernel says the process is blocked reading a pipe (its standard input)."""
    wchan = f"/proc/{pid}/wchan"
    try:
        open(wchan).read()
    except OSError:
        pytest.skip("no /proc/PID/wchan on this system to see that klcli is reading")
    deadline = time.monotonic() + 60
    while "pipe_read" not in open(wchan).read():
        assert time.monotonic() < deadline, "klcli never started reading its standard input"
        time.sleep(0.005)


def test_sigint_while_running_exits_130_and_keeps_the_old_output(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old result\n")
    process = subprocess.Popen([sys.executable, "-m", "klcli", "kl", "-", "0.5,0.5", "-o", str(target)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(b"0.5,0.5\n")  # …and then nothing: klcli is still reading when interrupted
    process.stdin.flush()
    _wait_until_reading_a_pipe(process.pid)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err.decode() == "klcli: interrupted\n" and out == b""
    assert target.read_text() == "old result\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left behind


def test_interrupt_during_computation_writes_nothing(cli, tmp_path, monkeypatch):
    from klcli.core import discrete

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(discrete, "expectation", interrupted)
    target = tmp_path / "out.json"
    run = cli("kl", "0.5,0.5", "0.9,0.1", "-o", target)
    assert run.code == 130 and run.err == "klcli: interrupted\n"
    assert not target.exists()


def test_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    from klcli.io import output

    target = tmp_path / "out.json"
    target.write_text("old\n")

    def fail(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(output.os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        output.write_atomically(str(target), "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
