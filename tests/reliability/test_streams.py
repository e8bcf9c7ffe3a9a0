"""Streams, signals and the environment (issue 21 items 4, 13–16): exit codes stay 0/1/2/130 whatever happens."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import SAMPLES

P, Q = str(SAMPLES / "p.csv"), str(SAMPLES / "q.csv")
KLCLI = [sys.executable, "-m", "klcli"]


def test_a_bad_csv_on_standard_input_is_always_one_error_line():
    outcomes = set()
    for _ in range(50):
        done = subprocess.run([*KLCLI, "kl", "-", "0.5,0.5"], input=b"a,b", capture_output=True)
        outcomes.add((done.returncode, done.stdout, len(done.stderr.splitlines()),
                      done.stderr.startswith(b"klcli: error: standard input")))
    assert outcomes == {(2, b"", 1, True)}


def _with_broken_stderr(*args):
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads standard error
    try:
        return subprocess.run([*KLCLI, *args], stdout=subprocess.PIPE, stderr=write_end)
    finally:
        os.close(write_end)


def test_exit_codes_survive_a_broken_standard_error():
    assert _with_broken_stderr("kl", "missing.csv", Q).returncode == 2
    noted = _with_broken_stderr("kl", "0.5,0.5", "1,0", "-q")  # prints a note about inf
    assert noted.returncode == 0 and noted.stdout == b"inf\n"
    assert _with_broken_stderr("kl", "0.5,0.5", "0.9,0.1", "-q", "--check", "value>1").returncode == 1


def _closing(descriptor):
    return lambda: os.close(descriptor)


def test_closed_standard_error_drops_messages_and_keeps_stdout_clean():
    bad = subprocess.run([*KLCLI, "kl", "missing.csv", Q], preexec_fn=_closing(2), capture_output=False,
                         stdout=subprocess.PIPE)
    assert (bad.returncode, bad.stdout) == (2, b"")
    good = subprocess.run([*KLCLI, "kl", "0.5,0.5", "1,0", "-q"], preexec_fn=_closing(2), stdout=subprocess.PIPE)
    assert (good.returncode, good.stdout) == (0, b"inf\n")


def test_closed_standard_output_is_a_clear_error_unless_o_is_given(tmp_path):
    done = subprocess.run([*KLCLI, "kl", P, Q], preexec_fn=_closing(1), stderr=subprocess.PIPE, text=True)
    assert done.returncode == 2
    assert done.stderr == "klcli: error: standard output is closed (>&-): nowhere to print the result; give -o FILE\n"
    written = subprocess.run([*KLCLI, "kl", P, Q, "--json", "-o", str(tmp_path / "r.json")], preexec_fn=_closing(1),
                             stderr=subprocess.PIPE, text=True)
    assert written.returncode == 0 and json.loads((tmp_path / "r.json").read_text())["rows"] == 8


def test_closed_standard_input():
    needed = subprocess.run([*KLCLI, "kl", "-", Q], preexec_fn=_closing(0), capture_output=True, text=True)
    assert needed.returncode == 2
    assert needed.stderr == ("klcli: error: standard input is closed (0<&-); pipe CSV text or .npy bytes into "
                             "'-'\n")
    unneeded = subprocess.run([*KLCLI, "kl", "0.5,0.5", "0.9,0.1", "-q"], preexec_fn=_closing(0),
                              capture_output=True, text=True)
    assert (unneeded.returncode, unneeded.stdout) == (0, "0.5108256237659907\n")


def test_ctrl_c_at_any_moment_is_exit_130_or_a_normal_end_never_a_traceback(tmp_path):
    np.save(tmp_path / "p.npy", np.random.default_rng(0).normal(size=(3000, 200)))
    rng = random.Random(21)
    for _ in range(30):
        ready_read, ready_write = os.pipe()
        launcher = (f"import os, sys\nsys.argv = ['klcli', 'kl', {str(tmp_path / 'p.npy')!r}, "
                    f"{str(tmp_path / 'p.npy')!r}, '--logits', '-q']\nfrom klcli.streams import run\n"
                    f"os.write({ready_write}, b'.')\nos.close({ready_write})\nrun()\n")
        process = subprocess.Popen([sys.executable, "-c", launcher], pass_fds=(ready_write,),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.close(ready_write)
        os.read(ready_read, 1)  # klcli's own code is running from here on
        os.close(ready_read)
        moment = rng.uniform(0, 0.5)
        try:
            process.wait(moment)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
        assert process.returncode in (0, 130), err
        assert b"Traceback" not in err
        if process.returncode == 130:
            assert err == b"klcli: interrupted\n"


def test_sigint_while_reading_standard_input_after_a_handshake(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old result\n")
    process = subprocess.Popen([*KLCLI, "kl", "-", "0.5,0.5", "-o", str(target)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(b"0.5,0.5\n")
    process.stdin.flush()
    # Ready when klcli is blocked reading standard input (its main thread waits in read).
    for _ in range(600):
        try:
            with open(f"/proc/{process.pid}/wchan") as wchan:
                state = wchan.read()
            with open(f"/proc/{process.pid}/syscall") as syscall:
                call = syscall.read().split()[0]
        except OSError:
            pytest.skip("no /proc to see the process wait")
        if call == "0" and state:  # read(2) on standard input
            break
        process.wait(0.05) if process.poll() is not None else None
        import time

        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, out, err) == (130, b"", b"klcli: interrupted\n")
    assert target.read_text() == "old result\n" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def _numbers(text):
    return set(re.findall(r"-?\d+\.\d+(?:e[-+]\d+)?", text))


@pytest.mark.parametrize("columns", ["0", "1", "20", "40", "80"])
def test_tables_at_any_width_print_every_number_whole(columns):
    teacher, student = SAMPLES / "teacher_logits.npy", SAMPLES / "student_logits.npy"
    env = {**os.environ, "COLUMNS": columns}
    table = subprocess.run([*KLCLI, "compare", teacher, student], capture_output=True, text=True, env=env)
    document = json.loads(subprocess.run([*KLCLI, "compare", teacher, student, "--json"], capture_output=True,
                                         text=True).stdout)
    assert table.returncode == 0 and table.stdout.strip()
    assert "…" not in table.stdout
    printed = _numbers(table.stdout)
    for name in ("kl", "kl_reverse", "js", "tv"):
        for key in ("mean", "std", "p99", "max"):
            assert f"{document[name][key]:.7g}" in printed, (name, key)


def test_an_empty_width_never_empties_the_output_file(tmp_path):
    target = tmp_path / "table.txt"
    target.write_text("old\n")
    env = {**os.environ, "COLUMNS": "0"}
    done = subprocess.run([*KLCLI, "kl", P, Q, "-o", str(target)], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "mean D(P‖Q)" in target.read_text()


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_narrow_encoding_gets_an_ascii_table(encoding):
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    done = subprocess.run([*KLCLI, "kl", P, Q], capture_output=True, env=env)
    assert done.returncode == 0 and done.stderr == b""
    text = done.stdout.decode("ascii")
    document = json.loads(subprocess.run([*KLCLI, "kl", P, Q, "--json"], capture_output=True).stdout)
    assert "mean D(P||Q)" in text and f"{document['value']:.7g}" in text


def test_no_warning_reaches_standard_error_and_a_tiny_temperature_is_named():
    done = subprocess.run([*KLCLI, "kl", "1,2", "2,1", "--logits", "--temperature", "1e-320"], capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("klcli: error: --temperature 1e-320: is too small;")
    assert len(done.stderr.splitlines()) == 1
    huge = subprocess.run([*KLCLI, "gaussian", "--logvar1", "1000", "-q"], capture_output=True, text=True)
    assert huge.stderr == "" and huge.returncode == 0


def test_a_refused_memory_map_is_the_out_of_memory_line(tmp_path):
    import resource

    np.save(tmp_path / "big.npy", np.zeros((1 << 14, 1 << 12), dtype=np.float32))  # 256 MiB
    limit = 220 << 20

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    done = subprocess.run([*KLCLI, "kl", str(tmp_path / "big.npy"), str(tmp_path / "big.npy"), "--logits"],
                          preexec_fn=cap, capture_output=True, text=True)
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert done.returncode in (0, 2)
    if done.returncode == 2:
        assert done.stderr.startswith("klcli: error: out of memory;") and len(done.stderr.splitlines()) == 1


def test_a_fifo_operand_is_read(cli, tmp_path):
    import threading

    fifo = tmp_path / "p.fifo"
    os.mkfifo(fifo)
    text = (SAMPLES / "p.csv").read_bytes()
    writer = threading.Thread(target=lambda: open(fifo, "wb").write(text))  # noqa: SIM115
    writer.start()
    run = cli("kl", fifo, Q, "-q")
    writer.join(10)
    assert run.code == 0 and float(run.out) == float(cli("kl", P, Q, "-q").out)


def test_binary_data_in_a_fifo_is_an_error_naming_the_fifo(cli, tmp_path):
    import threading

    fifo = tmp_path / "z.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: open(fifo, "wb").write(b"\0" * 1000))  # noqa: SIM115
    writer.start()
    run = cli("kl", fifo, Q)
    writer.join(10)
    assert run.code == 2
    assert run.err == f"klcli: error: {fifo}: holds NUL bytes: it is binary data, not CSV text or .npy bytes\n"


def test_dev_stdin_on_a_pipe_is_read():
    done = subprocess.run([*KLCLI, "kl", "/dev/stdin", Q, "-q"], input=(SAMPLES / "p.csv").read_bytes(),
                          capture_output=True)
    reference = subprocess.run([*KLCLI, "kl", P, Q, "-q"], capture_output=True)
    assert done.returncode == 0 and done.stdout == reference.stdout


def test_a_folder_without_search_permission_is_permission_denied(cli, monkeypatch):
    real_stat = os.stat

    def locked(path, *args, **kwargs):
        if str(path).startswith("/locked/"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", locked)
    run = cli("kl", "/locked/p.csv", Q)
    assert run.code == 2
    assert run.err == ("klcli: error: /locked/p.csv: cannot be read (permission denied: a folder on its path cannot "
                       "be searched)\n")
