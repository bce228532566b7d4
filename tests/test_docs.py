"""The docs' code runs: every ```python block of each page, in order, in one namespace per
page, and every Examples section of the public docstrings."""

import doctest
import importlib
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)

MODULES_WITH_EXAMPLES = [
    "inferax.pytree",
    "inferax.training",
    "inferax.target",
    "inferax.numpyro_bridge",
    "inferax.predictions",
    "inferax.sampling",
    "inferax.samplers.hmc",
    "inferax.samplers.langevin",
    "inferax.samplers.blackjax_kernel",
    "inferax.variational.gaussian",
    "inferax.variational.objectives",
    "inferax.flows.planar",
    "inferax.flows.radial",
    "inferax.variational.gp.covariances",
    "inferax.variational.gp.likelihoods",
]


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(BLOCK.findall(page.read_text()), start=1):
        code = compile(block, f"{page.name}, block {number}", "exec")
        exec(code, namespace)  # noqa: S102


@pytest.mark.parametrize("module_name", MODULES_WITH_EXAMPLES)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [test for test in finder.find(module) if test.examples]
    assert tests, f"{module_name} has no examples"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed in {module_name}"
