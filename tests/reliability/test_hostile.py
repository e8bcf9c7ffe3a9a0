"""Hostile inputs in bounded memory and time (issue 21, items 6–12 and 16's parse messages).

Bombs run the real CLI in a subprocess under an address-space limit: the result
must be exit 2 with one clear line or a bounded success, never an abort or a
MemoryError. Nothing here asserts a time.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading

import numpy as np

from klcli.core import stream

LIMIT = 2 << 30  # address space for bomb runs


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def klcli_limited(*args, stdin=None, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    """``klcli ARGS`` in a child process whose address space is capped at LIMIT."""
    environment = {k: v for k, v in os.environ.items() if k != "KLCLI_DEBUG"}
    return subprocess.run([sys.executable, "-m", "klcli", *map(str, args)], input=stdin, capture_output=True,
                          preexec_fn=_limited, cwd=cwd, env=environment, timeout=timeout)


def assert_clear_error(run: subprocess.CompletedProcess, *fragments: str) -> str:
    err = run.stderr.decode(errors="replace")
    assert run.returncode == 2, (run.returncode, err)
    assert "Traceback" not in err and "internal error" not in err and "out of memory" not in err, err
    lines = err.splitlines()
    assert lines and lines[0].startswith("klcli: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


# --- 12: --threads is capped at the cores available ---------------------------------------------------------


def test_threads_above_the_cores_are_capped_with_a_note(cli, tmp_path):
    cores = stream.available_cores()
    np.save(tmp_path / "p.npy", np.full((8, 4), 0.25))
    run = cli("kl", tmp_path / "p.npy", "0.25,0.25,0.25,0.25", "--threads", str(cores + 62), "--json")
    assert run.code == 0, run.err
    assert f"--threads {cores + 62} capped at the {cores} cores available to this process" in run.json()["notes"]
    honoured = cli("kl", tmp_path / "p.npy", "0.25,0.25,0.25,0.25", "--threads", "1", "--json")
    assert not any("capped" in note for note in honoured.json().get("notes", []))


def test_ordered_map_never_runs_more_threads_than_cores(monkeypatch):
    monkeypatch.setattr(stream, "available_cores", lambda: 2)
    seen = set()
    lock = threading.Lock()

    def work(item):
        with lock:
            seen.add(threading.current_thread().name)
        return item * 2

    assert list(stream.ordered_map(work, range(200), 64)) == [2 * i for i in range(200)]
    assert len(seen) <= 2


# --- 11: untrusted names are printed escaped ----------------------------------------------------------------

FORGED = "x\n klcli: error: forged\x1b]0;title\x07"


def _one_safe_line(run) -> str:
    assert run.code == 2, run.err
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("klcli: error: "), run.err
    assert "\x1b" not in run.err and "\x07" not in run.err
    return lines[0]


def test_npz_member_names_are_escaped(cli, tmp_path):
    np.savez(tmp_path / "a.npz", **{FORGED: np.full(2, 0.5), "y": np.full(2, 0.5)})
    line = _one_safe_line(cli("kl", tmp_path / "a.npz", "0.5,0.5"))
    assert "x\\n klcli: error: forged\\x1b]0;title\\x07" in line


def test_tensor_names_are_escaped(cli, tmp_path):
    import json
    import struct

    header = json.dumps({name: {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]} for name in (FORGED, "y")})
    (tmp_path / "a.safetensors").write_bytes(struct.pack("<Q", len(header)) + header.encode()
                                             + np.full(2, 0.5).tobytes())
    line = _one_safe_line(cli("kl", tmp_path / "a.safetensors", "0.5,0.5"))
    assert "\\x1b]0;title\\x07" in line


def test_csv_column_names_are_escaped(cli, tmp_path):
    (tmp_path / "a.csv").write_text("p\x1b]0;title\x07,q\n0.5,0.5\n")
    line = _one_safe_line(cli("kl", f"{tmp_path / 'a.csv'}:zz", "0.5,0.5"))
    assert "its columns are: p\\x1b]0;title\\x07, q" in line


def test_paths_are_escaped(cli, tmp_path):
    path = tmp_path / "p\x1b]0;title\x07\n klcli: error: forged.npy"
    path.write_bytes(b"not an array")
    line = _one_safe_line(cli("kl", path, "0.5,0.5"))
    assert "\\n klcli: error: forged.npy" in line
