import os
import shutil
import sys
import tempfile

import jax
import pytest

# Shape bugs surface as errors, not as silent broadcasting.
jax.config.update("jax_numpy_rank_promotion", "raise")
os.environ.setdefault("CI", "true")

sys.path.insert(0, os.path.dirname(__file__))  # for `import mcse_helpers`

_CACHE_VARIABLE = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    # One persistent compilation cache per test run, made here in the controller (or the
    # only process) and inherited by the xdist workers and the command-line subprocesses:
    # nothing is reused from earlier runs, but a program that several tests or workers
    # compile is compiled once. inferax leaves a cache that JAX already has alone.
    if not hasattr(config, "workerinput"):
        folder = tempfile.mkdtemp(prefix="inferax-test-jax-cache-")
        config.inferax_cache_dir = folder
        os.environ[_CACHE_VARIABLE] = folder
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_VARIABLE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    folder = getattr(config, "inferax_cache_dir", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _tests_use_the_installed_package():
    import inferax

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert not os.path.abspath(inferax.__file__).startswith(os.path.join(here, "inferax")), (
        "the tests must import the installed inferax, not the source tree"
    )
