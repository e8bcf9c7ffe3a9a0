"""Print a pip requirement pinning each runtime dependency to the lowest version pyproject.toml declares.

CI installs these (.ci/run) and runs the quick tier on them, so a lower bound can never again be a claim
nobody tested.
"""

import re
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
for requirement in project["dependencies"]:
    name, lowest = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)", requirement).groups()
    print(f"{name}=={lowest}")
