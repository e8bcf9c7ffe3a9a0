"""Documentation that stays true to the code: man pages, README examples, --help, completion."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import typer

from klcli.cli import app
from klcli.manpage import build_pages
from tests.conftest import ROOT

COMMANDS = sorted(typer.main.get_command(app).commands)


def test_man_pages_are_current():
    pages = build_pages()
    on_disk = {path.name: path.read_text() for path in (ROOT / "man").glob("*.1")}
    assert set(on_disk) == set(pages), "run: python -m klcli.manpage man/"
    for name, text in pages.items():
        assert on_disk[name] == text, f"man/{name} is stale; run: python -m klcli.manpage man/"
    assert set(pages) == {"klcli.1", *(f"klcli-{command}.1" for command in COMMANDS)}


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "man").glob("*.1")))
def test_man_pages_have_every_section_and_no_groff_warnings(page):
    text = (ROOT / "man" / page).read_text()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "INPUT FORMATS", "OUTPUT", "EXIT STATUS",
                    "EXAMPLES", "SEE ALSO"):
        assert f".SH {section}\n" in text, section
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    done = subprocess.run(["groff", "-man", "-ww", "-z", str(ROOT / "man" / page)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == ""


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_summary_options_defaults_and_an_example(cli, command):
    run = cli(command, "--help")
    assert run.code == 0
    text = run.out
    command_object = typer.main.get_command(app).commands[command]
    summary = command_object.help.strip().splitlines()[0]
    assert summary.split(";")[0][:40] in " ".join(text.split())
    assert "Examples" in text and f"klcli {command} " in text
    for param in command_object.params:
        if param.param_type_name == "option":
            assert param.opts[0] in text, param.opts[0]
            assert param.help, f"{command} {param.opts[0]} has no help"
    assert "[default: e]" in text  # the defaults are shown


def _readme_examples():
    """(command, expected output lines) for every `$ …` line in the README's console blocks."""
    text = (ROOT / "README.md").read_text()
    examples = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        current = None
        for line in block.splitlines():
            if line.startswith("$ "):
                current = (line[2:], [])
                examples.append(current)
            elif current is not None:
                current[1].append(line)
    return examples


def _same(expected: str, actual: str) -> bool:
    """Lines equal word by word and CSV field by field, numbers to 1e-9 relative."""
    left = [field for word in expected.split() for field in word.split(",")]
    right = [field for word in actual.split() for field in word.split(",")]
    if len(left) != len(right):
        return False
    for a, b in zip(left, right):
        if a == b:
            continue
        try:
            x, y = float(a), float(b)
        except ValueError:
            return False
        if not abs(x - y) <= 1e-9 * max(abs(x), abs(y)):
            return False
    return True


EXAMPLES = [example for example in _readme_examples() if not example[0].startswith("python")]


@pytest.mark.parametrize(("command", "expected"), EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_readme_examples_print_what_the_readme_shows(command, expected):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"], COLUMNS="100")
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, env=env)
    lines = done.stdout.splitlines()
    assert len(lines) == len(expected), done.stdout + done.stderr
    for want, got in zip(expected, lines):
        assert _same(want, got), f"README shows {want!r}, klcli printed {got!r}"


def test_readme_quick_start_has_exactly_two_commands():
    text = (ROOT / "README.md").read_text()
    quick = re.search(r"## Quick start\n\n```bash\n(.*?)```", text, flags=re.S)
    assert quick is not None
    lines = [line for line in quick.group(1).splitlines() if line.strip()]
    assert len(lines) == 2
    assert "klcli" in lines[0] and "sample_data/" in lines[0] and "pytest" in lines[1]
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(("shell", "variables"), [
    ("bash", {"_KLCLI_COMPLETE": "complete_bash", "COMP_WORDS": "klcli comp", "COMP_CWORD": "1"}),
    ("zsh", {"_KLCLI_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "klcli kl --bi"}),
])
def test_shell_completion(shell, variables):
    done = subprocess.run([sys.executable, "-m", "klcli"], capture_output=True, text=True,
                          env=dict(os.environ, **variables))
    assert ("compare" if shell == "bash" else "--bits") in done.stdout


def _help_examples():
    from klcli.manpage import _split_help

    group = typer.main.get_command(app)
    return [line for name in COMMANDS for line in _split_help(group.commands[name].help or "")[2]]


@pytest.mark.parametrize("line", [line for line in _help_examples()
                                  if "sample_data/" in line or not re.search(r"\w+\.(npy|csv|json)", line)])
def test_help_examples_run(cli, monkeypatch, line):
    """Every --help example on sample_data/ or inline numbers runs (exit 0) as written."""
    import shlex

    monkeypatch.chdir(ROOT)
    assert cli(*shlex.split(line)[1:]).code == 0, line
