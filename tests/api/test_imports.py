"""`import klcli` is light; the API is listed and lazily loaded."""

from __future__ import annotations

import subprocess
import sys

import klcli


def test_import_klcli_imports_no_heavy_module():
    code = ("import klcli, sys; print(sorted(m for m in ('rich','pyarrow','typer','scipy','dask','distributed') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_array_api_calls_import_no_heavy_module():
    code = ("import sys, klcli\n"
            "klcli.kl([0.5, 0.5], [0.9, 0.1]); klcli.js([0.5, 0.5], [0.9, 0.1]); klcli.entropy([0.5, 0.5])\n"
            "klcli.perplexity([[0.0, 0.0]], [0]); klcli.perplexity([-0.5], kind='logprobs')\n"
            "klcli.gaussian_kl(0.0, 1.0); klcli.logsumexp([0.0]); klcli.read('0.1,0.9')\n"
            "print(sorted(m for m in ('rich','pyarrow','typer','scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_dir_and_all_list_the_api():
    assert set(klcli.__all__) <= set(dir(klcli))
    for name in ("kl", "cross_entropy", "entropy", "js", "perplexity", "gaussian_kl", "read", "log_softmax",
                 "logsumexp", "summarize", "__version__"):
        assert name in klcli.__all__
    for name in klcli.__all__:
        assert getattr(klcli, name) is not None
    assert klcli.kl_divergence is klcli.kl and klcli.js_divergence is klcli.js


def test_unknown_attribute():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        klcli.nope  # noqa: B018
