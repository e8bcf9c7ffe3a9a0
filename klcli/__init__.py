"""klcli: information theory over probability distributions and model outputs.

The command line is :mod:`klcli.cli`; from Python, :mod:`klcli.api` is the
library it stands on, re-exported here and loaded on first use (so that
``import klcli`` and ``klcli --help`` import neither NumPy's users such as
rich, pyarrow and typer, nor scipy)::

    >>> import klcli
    >>> float(klcli.kl([0.5, 0.5], [0.9, 0.1]))
    0.5108256237659907
"""

__version__ = "0.1.0"

# Public name → the module that defines it, imported when the name is first used.
_API = {
    "kl": "klcli.api",
    "cross_entropy": "klcli.api",
    "entropy": "klcli.api",
    "js": "klcli.api",
    "perplexity": "klcli.api",
    "PerplexityResult": "klcli.api",
    "gaussian_kl": "klcli.api",
    "read": "klcli.api",
    "log_softmax": "klcli.api",
    "logsumexp": "klcli.api",
    "summarize": "klcli.api",
    # The commands from Python: the dictionary the CLI prints with --json.
    "run": "klcli.runner",
    "compare": "klcli.runner",
    "rlhf": "klcli.runner",
    # Scaling out: a piece's exact partial written to a file, and partial files merged into the run's dictionary.
    "write_partial": "klcli.runner",
    "merge": "klcli.runner",
}
# Earlier names, kept working: alias → (module, name).
_ALIASES = {
    "kl_divergence": ("klcli.api", "kl"),
    "js_divergence": ("klcli.api", "js"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API or name in _ALIASES:
        import importlib

        module, attribute = _ALIASES.get(name, (_API.get(name), name))
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'klcli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | set(_ALIASES))
