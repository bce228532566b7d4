"""What a first call costs: the command line answers without JAX, a second process with the
same model loads its programs from JAX's persistent cache, and the cache's switch."""

import importlib.metadata
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inferax
from inferax import compile_cache, samplers


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/"
    )


def test_help_version_and_argument_errors_do_not_import_jax():
    code = (
        "import sys\n"
        "from inferax.cli import main\n"
        "for argv in (['--help'], ['--version'], ['run'], ['run', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "import inferax\n"
        "print(sorted(m for m in ('jax', 'numpy', 'numpyro', 'xarray') if m in sys.modules))\n"
    )
    done = _run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert f"inferax {importlib.metadata.version('inferax')}" in done.stdout


def test_lazy_names_are_the_modules_own():
    from inferax.sampling import sample
    from inferax.target import Target

    assert inferax.sample is sample
    assert inferax.Target is Target
    assert set(inferax.__all__) <= set(dir(inferax))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        inferax.nope  # noqa: B018


def _logdensity(params):
    return -0.5 * jnp.sum(params["x"] ** 2)


def test_a_new_target_with_the_same_model_loads_its_programs_from_the_persistent_cache():
    # The test run's cache (tests/conftest.py) is JAX's own, so inferax leaves it be.
    assert jax.config.jax_compilation_cache_dir
    assert inferax.enable_compilation_cache() == pathlib.Path(jax.config.jax_compilation_cache_dir)
    events = []
    jax.monitoring.register_event_listener(lambda event, **kw: events.append(event))
    settings = dict(num_chains=2, num_warmup=20, num_samples=20, progress=False)
    kernel = samplers.mala(step_size=0.5)

    def new_target():
        # A new function object each time: nothing is shared in memory, only on disk.
        return inferax.Target.from_logdensity(lambda p: _logdensity(p), {"x": jnp.zeros(3)})

    first = inferax.sample(new_target(), kernel, jax.random.key(0), **settings)
    events.clear()
    before = compile_cache.compile_count()
    second = inferax.sample(new_target(), kernel, jax.random.key(0), **settings)
    assert compile_cache.compile_count() > before, "the in-memory cache answered"
    assert "/jax/compilation_cache/cache_hits" in events
    assert "/jax/compilation_cache/cache_misses" not in events
    np.testing.assert_array_equal(first.draws["x"], second.draws["x"])


def test_the_switch_and_a_users_own_cache_are_respected(monkeypatch, tmp_path):
    configured = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        monkeypatch.setenv("INFERAX_COMPILATION_CACHE", "0")
        assert inferax.enable_compilation_cache() is None
        assert jax.config.jax_compilation_cache_dir is None
        monkeypatch.delenv("INFERAX_COMPILATION_CACHE")
        assert inferax.enable_compilation_cache() == tmp_path / "inferax" / "jax"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "inferax" / "jax")
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
        assert inferax.enable_compilation_cache() == tmp_path / "mine"
    finally:
        jax.config.update("jax_compilation_cache_dir", configured)


def test_a_fresh_process_turns_the_cache_on_at_its_first_compile_unless_switched_off(tmp_path):
    code = (
        "import jax\n"
        "from inferax.compile_cache import compiled\n"
        "class Owner: pass\n"
        "owner = Owner()\n"
        "compiled(owner, jax.jit(lambda x: x + 1), {}, 1.0)\n"
        "print(jax.config.jax_compilation_cache_dir)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "INFERAX_"))}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    for switch, want in ((None, str(tmp_path / "inferax" / "jax")), ("0", "None")):
        extra = {} if switch is None else {"INFERAX_COMPILE_CACHE": switch}
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env | extra,
            cwd="/",
            timeout=120,
        )
        assert done.stdout.split() == [want], done.stderr
    assert (tmp_path / "inferax" / "jax").is_dir()
