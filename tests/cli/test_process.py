"""The installed command as a separate process: start-up imports, pipes, python -m."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import SAMPLES


def test_one_off_imports_no_heavy_modules():
    script = (
        "import sys\n"
        "from klcli.cli import main\n"
        "code = main(['kl', '0.5,0.5', '0.9,0.1', '-q'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pyarrow', 'scipy', 'rich', 'pandas', 'torch',\n"
        "                                                        'dask', 'distributed', 'multiprocessing'})\n"
        "print(code, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["0.5108256237659907", "0 []"]


def test_module_entry_point_and_exit_code():
    done = subprocess.run([sys.executable, "-m", "klcli", "kl", "0.5,0.5", "0.9,0.1", "-q", "--check", "value>1"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stdout == "0.5108256237659907\n"
    assert done.stderr.startswith("klcli: check failed: value>1 (actual 0.5108256237659907 is 0.489174 below")


def test_closed_pipe_ends_quietly(tmp_path):
    import numpy as np

    rows = np.random.default_rng(0).dirichlet(np.ones(4), size=200_000)
    np.save(tmp_path / "p.npy", rows)
    command = (f"{sys.executable} -m klcli kl {tmp_path / 'p.npy'} 0.25,0.25,0.25,0.25 --per-row --format csv"
               " | head -1")
    done = subprocess.run(["bash", "-c", "set -o pipefail; " + command], capture_output=True, text=True)
    assert done.stdout == "row,kl\n"
    assert done.stderr == ""
    assert done.returncode == 0


def test_installed_console_script_runs():
    import shutil
    from pathlib import Path

    beside = Path(sys.executable).with_name("klcli")  # the venv running the tests
    script = str(beside) if beside.exists() else shutil.which("klcli")
    assert script is not None, "klcli is not installed in this environment"
    done = subprocess.run([script, "js", str(SAMPLES / "p.npy"), str(SAMPLES / "q.npy"), "-q"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and float(done.stdout) > 0
