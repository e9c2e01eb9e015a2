"""Write one requirements file per role from pyproject.toml: the base dependencies plus the
role's extra, with ``fraudstack[...]`` references expanded.

The Dockerfile installs these before it copies the source, so a change to the code (or to a
tool setting in pyproject.toml) rebuilds only the small layer that installs fraudstack itself,
not the virtual environments.

    python images/requirements.py pyproject.toml OUTPUT_DIR ROLE...
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SELF = re.compile(r"^fraudstack\[(?P<extras>[^\]]+)\]$")


def requirements(project: dict[str, object], extra: str) -> list[str]:
    optional = project["optional-dependencies"]
    assert isinstance(optional, dict)
    found: list[str] = []
    for requirement in optional[extra]:
        match = SELF.match(requirement.replace(" ", ""))
        if match is None:
            found.append(requirement)
            continue
        for inner in match["extras"].split(","):
            found.extend(requirements(project, inner))
    return found


def main(pyproject: str, output: str, *roles: str) -> None:
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    Path(output).mkdir(parents=True, exist_ok=True)
    for role in roles:
        lines = sorted({*project["dependencies"], *requirements(project, role)})
        Path(output, f"{role}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
