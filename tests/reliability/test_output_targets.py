"""-o never destroys anything (issue 21 items 1–5): special files, inputs, modes, write failures, signals."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
import threading

import pytest

from tests.conftest import SAMPLES

P, Q = str(SAMPLES / "p.csv"), str(SAMPLES / "q.csv")


def _klcli(*args, **options):
    return subprocess.run([sys.executable, "-m", "klcli", *map(str, args)], capture_output=True, text=True,
                          **options)


def _device(tmp_path, name, minor):
    node = tmp_path / name
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except (PermissionError, OSError):
        pytest.skip("cannot make a device node here (not root)")
    return node


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".klcli-")]


@pytest.mark.parametrize("via_link", [False, True])
def test_a_device_is_written_into_and_stays_a_device(cli, tmp_path, via_link):
    null = _device(tmp_path, "null", 3)  # /dev/null's numbers, in a temporary folder
    target = null
    if via_link:
        target = tmp_path / "link"
        target.symlink_to(null)
    run = cli("kl", P, Q, "--check", "value<1", "-o", target)
    assert (run.code, run.out, run.err) == (0, "", "")
    assert stat.S_ISCHR(os.stat(null).st_mode) and os.stat(null).st_rdev == os.makedev(1, 3)
    assert not via_link or os.path.islink(target)
    assert _leftovers(tmp_path) == []


def test_a_fifo_is_written_into_not_replaced(cli, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo).read()))  # noqa: SIM115
    reader.start()
    run = cli("kl", P, Q, "--json", "-o", fifo)
    reader.join(10)
    assert run.code == 0 and stat.S_ISFIFO(os.stat(fifo).st_mode)
    expected = cli("kl", P, Q, "--json").json()
    assert json.loads(received[0]) == expected


def test_dash_is_standard_output_and_makes_no_file(tmp_path):
    done = _klcli("kl", P, Q, "-q", "-o", "-", cwd=tmp_path)
    assert done.returncode == 0 and float(done.stdout) == float(_klcli("kl", P, Q, "-q").stdout)
    assert list(tmp_path.iterdir()) == []
    through = _klcli("kl", P, Q, "-q", "-o", "/dev/stdout", cwd=tmp_path)
    assert through.returncode == 0 and through.stdout == done.stdout and list(tmp_path.iterdir()) == []


def test_full_device_is_an_output_error(cli, tmp_path):
    full = _device(tmp_path, "full", 7)  # /dev/full: every write is ENOSPC
    run = cli("kl", P, Q, "-o", full)
    assert run.code == 2 and run.out == ""
    assert run.err == f"klcli: error: -o {full}: no space left on device\n"
    assert stat.S_ISCHR(os.stat(full).st_mode)


def _copy(tmp_path, name, source):
    target = tmp_path / name
    target.write_bytes(source.read_bytes())
    return target


def test_reward_file_is_an_input(cli, tmp_path):
    rewards = _copy(tmp_path, "r.npz", SAMPLES / "rlhf.npz")
    before = rewards.read_bytes()
    npz = SAMPLES / "rlhf.npz"
    run = cli("rlhf", f"{npz}:policy", f"{npz}:ref", "--reward", f"{rewards}:reward", "-o", rewards)
    assert run.code == 2 and "is one of the inputs" in run.err and rewards.read_bytes() == before


def test_a_folder_named_with_a_colon_is_resolved_as_the_reader_does(cli, tmp_path):
    folder = tmp_path / "a:b"
    folder.mkdir()
    archive = _copy(folder, "x.npz", SAMPLES / "rlhf.npz")
    before = archive.read_bytes()
    run = cli("rlhf", f"{archive}:policy", f"{archive}:ref", "-o", archive)
    assert run.code == 2 and run.err.startswith(f"klcli: error: -o {archive}: is one of the inputs")
    assert archive.read_bytes() == before


def test_a_hard_link_to_an_input_is_refused(cli, tmp_path):
    source = _copy(tmp_path, "p.csv", SAMPLES / "p.csv")
    os.link(source, tmp_path / "alias.csv")
    run = cli("kl", source, Q, "-o", tmp_path / "alias.csv")
    assert run.code == 2 and "is one of the inputs" in run.err
    assert source.read_bytes() == (SAMPLES / "p.csv").read_bytes()


def test_the_file_standard_input_comes_from_is_an_input(tmp_path):
    source = _copy(tmp_path, "in.csv", SAMPLES / "p.csv")
    with open(source, "rb") as stdin:
        done = subprocess.run([sys.executable, "-m", "klcli", "kl", "-", Q, "-o", str(source)], stdin=stdin,
                              capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == (f"klcli: error: -o {source}: is one of the inputs (standard input); "
                           "klcli never overwrites its inputs\n")
    assert source.read_bytes() == (SAMPLES / "p.csv").read_bytes()


def test_modes_follow_the_umask_and_an_existing_file_keeps_its_own(tmp_path):
    for umask, expected in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        target = tmp_path / f"new-{umask:o}.json"
        done = subprocess.run([sys.executable, "-m", "klcli", "kl", P, Q, "-o", str(target)],
                              preexec_fn=lambda umask=umask: os.umask(umask), capture_output=True)
        assert done.returncode == 0
        assert stat.S_IMODE(os.stat(target).st_mode) == expected
    existing = tmp_path / "existing.json"
    existing.write_text("old\n")
    os.chmod(existing, 0o640)
    assert _klcli("kl", P, Q, "-o", existing).returncode == 0
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o640 and existing.read_text() != "old\n"


def test_a_symlinked_target_keeps_its_link(cli, tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old\n")
    (tmp_path / "link.json").symlink_to(real)
    assert cli("kl", P, Q, "--json", "-o", tmp_path / "link.json").code == 0
    assert os.path.islink(tmp_path / "link.json") and json.loads(real.read_text())["rows"] == 8


@pytest.mark.parametrize("name, reason", [
    ("", "names no file; give a file name, or '-' for standard output"),
    ("x" * 300, "file name too long"),
    ("missing/out.json", "the folder {tmp}/missing does not exist"),
])
def test_bad_names_are_one_error_line(cli, tmp_path, monkeypatch, name, reason):
    monkeypatch.chdir(tmp_path)
    run = cli("kl", P, Q, "-o", name)
    shown = repr(name) if name == "" else name
    assert (run.code, run.out) == (2, "")
    assert run.err == f"klcli: error: -o {shown}: {reason.format(tmp=tmp_path)}\n"
    assert list(tmp_path.iterdir()) == []


def test_over_the_file_size_limit_is_an_output_error_and_the_old_file_stays(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    import numpy as np

    rows = np.random.default_rng(1).dirichlet(np.ones(3), size=400)
    np.save(tmp_path / "p.npy", rows)
    done = subprocess.run([sys.executable, "-m", "klcli", "kl", str(tmp_path / "p.npy"), "0.3,0.3,0.4",
                           "--format", "csv", "-o", str(target)], preexec_fn=limit, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == f"klcli: error: -o {target}: file too large\n"
    assert target.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_read_only_filesystem_is_an_output_error(tmp_path):
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/unshare"):
        pytest.skip("needs root and unshare for a private read-only mount")
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "out.json").write_text("old\n")
    script = (f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
              f"{sys.executable} -m klcli kl {P} {Q} -o {folder}/out.json")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True)
    if "mount" in done.stderr and "klcli" not in done.stderr:
        pytest.skip(f"no private mounts here: {done.stderr.strip()}")
    assert done.returncode == 2
    assert done.stderr == f"klcli: error: -o {folder}/out.json: read-only file system\n"
    assert (folder / "out.json").read_text() == "old\n" and _leftovers(folder) == []


def test_permission_denied_is_an_output_error(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    (folder / "out.json").write_text("old\n")
    os.chmod(folder, 0o555)
    try:
        done = subprocess.run([sys.executable, "-m", "klcli", "kl", P, Q, "-o", str(folder / "out.json")],
                              preexec_fn=lambda: os.setuid(65534) if os.geteuid() == 0 else None,
                              capture_output=True, text=True)
    except PermissionError:
        pytest.skip("the unprivileged user cannot run this Python (EACCES cannot be shown as root)")
    if "Permission denied" in done.stderr and "klcli: error" not in done.stderr:
        pytest.skip("the unprivileged user cannot run this checkout")
    assert done.returncode == 2
    assert done.stderr == f"klcli: error: -o {folder}/out.json: permission denied\n"
    assert (folder / "out.json").read_text() == "old\n"


def test_folder_removed_during_the_run(cli, tmp_path, monkeypatch):
    import shutil

    from klcli.io import output

    folder = tmp_path / "gone"
    folder.mkdir()
    real = output.write_atomically

    def remove_then_write(path, text, existing=None, **options):
        shutil.rmtree(folder)
        return real(path, text, existing, **options)

    monkeypatch.setattr(output, "write_atomically", remove_then_write)
    run = cli("kl", P, Q, "-o", folder / "out.json")
    assert run.code == 2
    assert run.err == f"klcli: error: -o {folder}/out.json: the folder {folder} does not exist (was it removed?)\n"


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_the_write_leaves_no_temporary_file(tmp_path, number):
    target = tmp_path / "out.json"
    target.write_text("old\n")
    # The signal arrives while the temporary file exists (inside the write, before the rename).
    script = (
        "import os, signal\n"
        "from klcli.io import output\n"
        "real = output._write_all\n"
        "def interrupted(descriptor, data):\n"
        f"    os.kill(os.getpid(), {int(number)})\n"
        "    real(descriptor, data)\n"
        "output._write_all = interrupted\n"
        "import sys\n"
        f"sys.argv = ['klcli', 'kl', {P!r}, {Q!r}, '--json', '-o', {str(target)!r}]\n"
        "from klcli.streams import run\n"
        "run()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 128 + number and "Traceback" not in done.stderr
    assert _leftovers(tmp_path) == []
    text = target.read_text()
    assert text == "old\n" or json.loads(text)["rows"] == 8
