"""Build the manual pages from the Typer app: ``python -m klcli.manpage man/``.

Every option, argument, summary and example comes from the app itself (its
docstrings and ``help=``), the rest from :mod:`klcli.manprose`; so the pages
cannot say something the program does not. A test rebuilds them and compares
with the checked-in ``man/`` pages.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer

from klcli import __version__, manprose
from klcli.cli import app

# Non-ASCII characters of the help texts as glyphs every groff device has (groff -man -ww -z warns
# about any it cannot find), or as plain ASCII.
_GLYPHS = {
    "‖": "||", "·": "*", "Σ": "\\(*S", "π": "\\(*p", "ε": "\\(*e", "μ": "\\(*m", "σ": "\\(*s",
    "Δ": "\\(*D", "−": "\\(mi", "×": "\\(mu", "√": "\\(sr", "≥": "\\(>=", "≤": "\\(<=", "—": "\\(em",
    "–": "\\(en", "…": "...", "²": "^2", "ᵀ": "^T", "⁻¹": "^-1", "’": "'", "₁": "1", "₂": "2", "ₙ": "n",
    "ⁿ": "^n", "≈": "~", "∩": " & ", "→": "->", "≠": "!=", "β": "\\(*b", "½": "1/2", "θ": "\\(*h", "λ": "\\(*l",
    "ú": "\\['u]",
    "±": "\\(+-",
}


def escape(text: str) -> str:
    """Text as roff: backslashes and hyphens escaped, other characters as portable glyphs.

    Examples
    --------
    >>> escape("D(P‖Q) --base")
    'D(P||Q) \\\\-\\\\-base'
    """
    text = text.replace("\\", "\\e").replace("-", "\\-").replace("⁻¹", "^\\-1")
    text = "".join(_GLYPHS.get(c, c) if ord(c) >= 128 else c for c in text)
    unknown = sorted({c for c in text if ord(c) >= 128})
    if unknown:
        raise ValueError(f"no roff glyph for {unknown!r}: add them to manpage._GLYPHS")
    return re.sub(r"(?m)^([.'])", r"\\&\1", text)


def _paragraphs(text: str) -> list[str]:
    return [" ".join(line.strip() for line in block.splitlines()) for block in re.split(r"\n\s*\n", text.strip())]


def _split_help(help_text: str) -> tuple[str, list[str], list[str]]:
    """(summary, description paragraphs, example command lines) from a command's docstring."""
    body, _, examples = help_text.partition("Examples:")
    paragraphs = _paragraphs(body)
    lines = [line.strip() for line in examples.splitlines() if line.strip()]
    return paragraphs[0], paragraphs[1:], lines


def _option_entry(param, context) -> str:
    """An option as --help shows it (names, value, meaning, default), as a roff tagged paragraph."""
    names, meaning = param.get_help_record(context)  # e.g. ("-q, --quiet", "…") or ("--epsilon E", "…")
    parts = names.split(" ")
    flags = ", ".join(f"\\fB{escape(p.strip(','))}\\fR" for p in parts if p.startswith("-"))
    value = " ".join(p for p in parts if not p.startswith("-"))
    value = f" \\fI{escape(value)}\\fR" if value else ""
    return f".TP\n{flags}{value}\n{escape(' '.join(meaning.split()))}\n"


def _section(title: str, paragraphs: list[str]) -> str:
    return f".SH {title}\n" + "".join(f".PP\n{escape(p)}\n" for p in paragraphs)


def command_page(name: str, command) -> str:
    summary, description, examples = _split_help(command.help or "")
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
    context = typer.Context(command, info_name=name)
    synopsis = " ".join(
        (f"[\\fI{escape(p.metavar or p.name.upper())}\\fR]" if not p.required else f"\\fI{escape(p.metavar)}\\fR")
        for p in arguments)
    page = [
        f'.TH KLCLI\\-{name.upper()} 1 "" "klcli {__version__}" "klcli manual"\n',
        f".SH NAME\nklcli\\-{escape(name)} \\- {escape(summary)}\n",
        f".SH SYNOPSIS\n.B klcli {escape(name)}\n[\\fIOPTIONS\\fR] {synopsis}\n",
        _section("DESCRIPTION", [summary, *description]),
    ]
    if arguments:
        page.append(".SH ARGUMENTS\n" + "".join(
            f".TP\n\\fI{escape(p.metavar or p.name.upper())}\\fR\n{escape(getattr(p, 'help', '') or '')}\n"
            for p in arguments))
    page.append(".SH OPTIONS\n" + "".join(_option_entry(p, context) for p in options))
    page.append(_section("INPUT FORMATS", _paragraphs(manprose.INPUT_FORMATS)))
    page.append(_section("OUTPUT", [manprose.OUTPUT[name], *_paragraphs(manprose.COMMON_OUTPUT),
                                    *_paragraphs(manprose.CHECKS)]))
    page.append(_section("EXIT STATUS", _paragraphs(manprose.EXIT_STATUS)))
    page.append(".SH EXAMPLES\n" + "".join(f".PP\n.nf\n.RS\n{escape(line)}\n.RE\n.fi\n" for line in examples))
    page.append(".SH SEE ALSO\n.BR klcli (1)\n")
    return "".join(page)


def main_page(group) -> str:
    names = sorted(group.commands)
    page = [
        f'.TH KLCLI 1 "" "klcli {__version__}" "klcli manual"\n',
        f".SH NAME\nklcli \\- {escape(_paragraphs(group.help or '')[0])}\n",
        ".SH SYNOPSIS\n.B klcli\n\\fICOMMAND\\fR [\\fIOPTIONS\\fR] \\fIOPERAND\\fR...\n.br\n.B klcli \\-\\-version\n",
        _section("DESCRIPTION", _paragraphs(manprose.OVERVIEW)),
        ".SH COMMANDS\n" + "".join(
            f".TP\n.B {escape(name)}\n{escape(_split_help(group.commands[name].help or '')[0])}\n" for name in names),
        ".SH OPTIONS\n.TP\n\\fB\\-\\-version\\fR\nPrint the version and exit.\n.TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\n"
        "Show the commands, or a command's options.\n.TP\n\\fB\\-\\-install\\-completion\\fR\nInstall shell "
        "completion for the current shell (bash or zsh).\n.TP\n\\fB\\-\\-show\\-completion\\fR\nPrint the "
        "completion script for the current shell.\n",
        _section("INPUT FORMATS", _paragraphs(manprose.INPUT_FORMATS)),
        _section("OUTPUT", [*_paragraphs(manprose.COMMON_OUTPUT), *_paragraphs(manprose.CHECKS)]),
        _section("EXIT STATUS", _paragraphs(manprose.EXIT_STATUS)),
        ".SH EXAMPLES\n" + "".join(
            f".PP\n.nf\n.RS\n{escape(line)}\n.RE\n.fi\n"
            for name in names for line in _split_help(group.commands[name].help or "")[2][:1]),
        ".SH SEE ALSO\n" + ",\n".join(f".BR klcli\\-{escape(name)} (1)" for name in names) + "\n",
    ]
    return "".join(page)


def build_pages() -> dict[str, str]:
    """Every page, by file name."""
    group = typer.main.get_group(app)
    pages = {"klcli.1": main_page(group)}
    for name, command in sorted(group.commands.items()):
        pages[f"klcli-{name}.1"] = command_page(name, command)
    return pages


def write_pages(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in build_pages().items():
        path = folder / name
        path.write_text(text, encoding="ascii")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_pages(Path(sys.argv[1] if len(sys.argv) > 1 else "man")):
        print(path)
