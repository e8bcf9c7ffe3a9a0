"""The README's Python API example runs as a doctest, with its printed values."""

from __future__ import annotations

import doctest
import re

from tests.conftest import ROOT


def test_readme_python_examples():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for number, block in enumerate(blocks):
        runner.run(parser.get_doctest(block, {}, f"README Python API block {number}", "README.md", 0))
    assert runner.failures == 0 and runner.tries > 0
