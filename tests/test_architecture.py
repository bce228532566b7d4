"""The shape the design fixes, read from the source: import arrows, module sizes, declared
dependencies, and the formatter and linter.

These tests read the source tree next to this file, not the installed package: they check
how the code is written, not what it does.
"""

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "inferax": "inferax",
    "samplers": "inferax.samplers",
    "variational": "inferax.variational",
    "flows": "inferax.flows",
    "diagnostics": "inferax.diagnostics",
}
CORE_FACE = {"inferax.cli", "inferax.__main__"}
"""The core's face: the only core modules that may import the layers above the core."""

FORBIDDEN = [
    # (importer prefix, imported prefix, why)
    ("inferax.flows", "inferax.variational", "bijections sit below the families"),
    ("inferax.samplers", "inferax.variational", "samplers do not depend on VI"),
    ("inferax.samplers", "inferax.diagnostics", "samplers do not depend on diagnostics"),
    ("inferax.diagnostics", "inferax.samplers", "diagnostics read DataTrees, not kernels"),
]
LAYERS = ("inferax.samplers", "inferax.variational", "inferax.flows", "inferax.diagnostics")
MAX_MODULE_LINES = 600
LONG_MODULE_REASON = "Why this module is long:"


def _modules():
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            yield name, path


def _is_layer(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _imports(module: str, path: Path):
    """``(line, imported module, imported name or None)`` for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                yield node.lineno, base, alias.name


MODULES = dict(_modules())


def test_the_source_tree_is_found():
    assert "inferax.target" in MODULES and "inferax.samplers" in MODULES


def test_imports_follow_the_design_arrows():
    broken = []
    for module, path in MODULES.items():
        where = f"{path.relative_to(ROOT)}"
        is_core = not any(_is_layer(module, layer) for layer in LAYERS)
        for line, imported, _ in _imports(module, path):
            if not _is_layer(imported, "inferax"):
                continue
            if is_core and module not in CORE_FACE:
                for layer in LAYERS:
                    if _is_layer(imported, layer):
                        broken.append(f"{where}:{line}: the core imports {imported}")
            for importer, target, why in FORBIDDEN:
                if _is_layer(module, importer) and _is_layer(imported, target):
                    broken.append(f"{where}:{line}: {module} imports {imported} ({why})")
    assert not broken, "\n".join(broken)


def test_no_module_imports_another_modules_private_names():
    broken = []
    for module, path in MODULES.items():
        for line, imported, name in _imports(module, path):
            private_module = any(
                part.startswith("_") and part != "__future__" for part in imported.split(".")
            )
            private_name = name is not None and name.startswith("_") and name != "__version__"
            if _is_layer(imported, "inferax") and (private_name or private_module):
                what = f"{imported}.{name}" if name else imported
                broken.append(f"{path.relative_to(ROOT)}:{line}: imports {what}")
    assert not broken, "\n".join(broken)


def test_no_module_is_longer_than_a_sitting_without_saying_why():
    long = []
    for path in MODULES.values():
        text = path.read_text()
        lines = text.count("\n")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_MODULE_LINES and LONG_MODULE_REASON not in docstring:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, "\n".join(long)


def test_every_package_is_listed_for_setuptools():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    packages = {module for module, path in MODULES.items() if path.name == "__init__.py"}
    assert packages == listed


def _declared_distributions() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(config["dependencies"])
    for extra in config.get("optional-dependencies", {}).values():
        requirements += extra
    return {
        re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")
        for req in requirements
    }


def test_every_imported_package_is_declared():
    distributions = importlib.metadata.packages_distributions()
    declared = _declared_distributions()
    missing = []
    for module, path in MODULES.items():
        for line, imported, _ in _imports(module, path):
            top = imported.split(".")[0]
            if not top or top == "inferax" or top in sys.stdlib_module_names:
                continue
            owners = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
            if not owners & declared:
                missing.append(f"{path.relative_to(ROOT)}:{line}: {top} ({sorted(owners)})")
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(missing)


def _ruff() -> str:
    found = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(found).exists():
        pytest.fail("ruff is not installed; it is in the test extra of pyproject.toml")
    return found


@pytest.mark.parametrize(
    "arguments", [["format", "--check", "--diff"], ["check"]], ids=["format", "lint"]
)
def test_ruff_holds_on_the_whole_tree(arguments):
    result = subprocess.run(
        [_ruff(), *arguments, "."], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
