"""Every third-party library a role's code imports is installed by that role's extra.

Each image installs ``fraudstack[<role>]`` and nothing else (``images/requirements.py``), so a
library imported by a role's modules, or by the shared modules they reach, but missing from the
role's extra, would only show as a ``ModuleNotFoundError`` inside the built image. The import
graph (grimp, the library behind ``lint-imports``) finds every import, at module level or inside a
function; a library counts as installed when the extra names its distribution or one of the
extra's requirements pulls it in (read from the installed distributions' metadata).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType

import grimp
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OURS = ("fraudstack", "fraudmodel_operator")

# role -> what its image runs: the console script `fraudstack <role>` (which imports only the
# chosen role's module, by name) or the operator's `python -m fraudmodel_operator`; everything
# else is reached through imports. Modules the role's package keeps for tests, benchmarks and the
# demo (say fraudstack.aggregate.bulk) are not in the image's path and need not fit its extra.
ROLES = {
    "serve": ["fraudstack.cli", "fraudstack.serve.cli", "fraudstack.serve.gunicorn_conf"],
    "ingest": ["fraudstack.cli", "fraudstack.ingest.cli"],
    "aggregate": ["fraudstack.cli", "fraudstack.aggregate.cli"],
    "snapshot": ["fraudstack.cli", "fraudstack.snapshot.cli"],
    "train": ["fraudstack.cli", "fraudstack.train.cli"],
    "operator": ["fraudmodel_operator.__main__"],
}

# (module, library): an import inside a function that the role never calls. Each one is checked
# to really sit inside a function, so moving it to module level fails this test.
LAZY = {
    # forest.compile_forest turns an ONNX graph into forest.npz at training time; serving loads
    # the compiled file and never parses ONNX.
    ("fraudstack.forest", "onnx"): {"serve"},
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*OURS, include_external_packages=True)


def _reached(role: str) -> set[str]:
    """Our modules the role's image can import, and the external modules they import."""
    graph = _graph()
    seen, todo = set(ROLES[role]), list(ROLES[role])
    while todo:
        module = todo.pop()
        for imported in graph.find_modules_directly_imported_by(module):
            if role in LAZY.get((module, imported.split(".")[0]), set()):
                continue
            if imported not in seen:
                seen.add(imported)
                if imported.split(".")[0] in OURS:
                    todo.append(imported)
    return seen


def _third_party(modules: set[str]) -> set[str]:
    top = {module.split(".")[0] for module in modules} - set(OURS)
    return {name for name in top if name not in sys.stdlib_module_names}


def _expanded(extra: str) -> list[Requirement]:
    """The base dependencies and the extra's, with ``fraudstack[...]`` references expanded."""
    found = [Requirement(text) for text in PYPROJECT["dependencies"]]
    for text in PYPROJECT["optional-dependencies"][extra]:
        requirement = Requirement(text)
        if _normal(requirement.name) == "fraudstack":
            for inner in requirement.extras:
                found.extend(_expanded(inner))
        else:
            found.append(requirement)
    return found


def _installed_by(requirements: list[Requirement]) -> set[str]:
    """Distributions the requirements install, transitively, with the extras they ask for."""
    names: set[str] = set()
    todo = [(requirement.name, frozenset(requirement.extras)) for requirement in requirements]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (_normal(name), extras) in done:
            continue
        done.add((_normal(name), extras))
        names.add(_normal(name))
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({"extra": extra}) for extra in (*extras, "")
            ):
                continue
            todo.append((requirement.name, frozenset(requirement.extras)))
    return names


def _distributions(module: str) -> set[str]:
    return {_normal(name) for name in metadata.packages_distributions().get(module, [])}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_imported_library_is_installed_by_the_role_extra(role: str) -> None:
    installed = _installed_by(_expanded(role))
    missing = {
        library: sorted(_distributions(library))
        for library in _third_party(_reached(role))
        if not _distributions(library) & installed
    }
    assert missing == {}, f"fraudstack[{role}] does not install: {missing}"


@pytest.mark.parametrize(("role", "library"), [("serve", "sklearn"), ("operator", "numpy")])
def test_the_check_sees_a_library_missing_from_an_extra(role: str, library: str) -> None:
    # the test above would pass vacuously if the graph or the metadata came out empty
    assert _distributions(library), f"{library} is not installed here"
    assert not _distributions(library) & _installed_by(_expanded(role))
    assert _third_party(_reached("train")) >= {"sklearn", "numpy", "pyarrow"}


def test_slim_images_stay_slim() -> None:
    serve = _installed_by(_expanded("serve"))
    operator = _installed_by(_expanded("operator"))
    assert not serve & {"scikit-learn", "kopf", "kubernetes", "matplotlib", "aiokafka", "pyarrow"}
    assert not operator & {"scikit-learn", "numpy", "onnxruntime", "onnx", "matplotlib"}


def _inside_function(module: str, library: str) -> bool:
    """True when every import of ``library`` in ``module`` sits in a function body."""
    source = ROOT / "services" / Path(*module.split(".")).with_suffix(".py")
    tree = ast.parse(source.read_text())
    lines_in_functions: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines_in_functions |= {
                inner.lineno for inner in ast.walk(node) if isinstance(inner, ast.stmt)
            }
    details = _graph().get_import_details(importer=module, imported=library)
    return bool(details) and all(item["line_number"] in lines_in_functions for item in details)


@pytest.mark.parametrize(("module", "library"), sorted(LAZY))
def test_excused_imports_are_lazy(module: str, library: str) -> None:
    assert _inside_function(module, library), f"{module} imports {library} at module level"


def _requirements_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "requirements", ROOT / "images" / "requirements.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_requirement_files_are_base_plus_the_role_extra(tmp_path: Path) -> None:
    _requirements_module().main(str(ROOT / "pyproject.toml"), str(tmp_path), *ROLES)
    for role in ROLES:
        lines = (tmp_path / f"{role}.txt").read_text().splitlines()
        assert {Requirement(line).name for line in lines} == {
            requirement.name for requirement in _expanded(role)
        }
    serve = (tmp_path / "serve.txt").read_text()
    assert "onnxruntime" in serve and "scikit-learn" not in serve and "kopf" not in serve


def test_the_dockerfile_builds_one_image_per_role_extra() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM runtime AS (\S+)$", dockerfile, re.MULTILINE))
    extras = set(PYPROJECT["optional-dependencies"]) - {"all", "dev"}
    assert targets == extras == set(ROLES)
    # every loop over the roles (requirements, virtual environments, the wheel) names them all
    for loop in re.findall(r"for role in ([a-z ]+); do", dockerfile):
        assert set(loop.split()) == extras
    for name in re.findall(r"COPY --from=dependencies /venvs/(\S+) /opt/venv", dockerfile):
        assert name in extras
