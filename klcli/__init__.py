"""klcli: information theory over probability distributions and model outputs.

The command line is :mod:`klcli.cli`; from Python, the core functions are
importable from here (loaded on first use, so ``klcli --help`` stays fast)::

    >>> import klcli
    >>> klcli.kl_divergence([0.5, 0.5], [0.9, 0.1]).tolist()
    [0.5108256237659907]
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "kl_divergence": "klcli.core.discrete",
    "cross_entropy": "klcli.core.discrete",
    "entropy": "klcli.core.discrete",
    "js_divergence": "klcli.core.discrete",
    "log_softmax": "klcli.core.logspace",
    "logsumexp": "klcli.core.logspace",
    "summarize": "klcli.core.stats",
    "run": "klcli.runner",
    "compare": "klcli.runner",
    "rlhf": "klcli.runner",
}

__all__ = ["__version__", *_API]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'klcli' has no attribute {name!r}")
