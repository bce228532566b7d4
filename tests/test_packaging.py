"""`pip install .` (not only an editable install) ships every subpackage."""

import os
import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_plain_install_ships_every_subpackage(tmp_path):
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = config["tool"]["setuptools"]["packages"]
    mapping = config["tool"]["setuptools"]["package-dir"]
    # Every folder with Python files under a mapped folder must be a listed package.
    for name, folder in mapping.items():
        for sub in (ROOT / folder).rglob("__init__.py"):
            relative = sub.parent.relative_to(ROOT / folder)
            dotted = ".".join([name, *relative.parts]) if relative.parts else name
            assert dotted in packages, f"{dotted} is not listed in [tool.setuptools] packages"
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import importlib, inferax; "
        + "; ".join(f"importlib.import_module('{name}')" for name in packages)
        + f"; assert inferax.__file__.startswith({str(target)!r}), inferax.__file__"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
