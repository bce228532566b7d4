"""Checkpoint and resume: a killed run continues bit for bit, a corrupt newest checkpoint
falls back to the one before, and a different model or setting is refused."""

import importlib.util
import os
import pathlib
import signal
import subprocess
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inferax
from inferax import checkpoint, samplers

SLOW_MODEL = """
import sys
import time
import warnings

import jax
import jax.numpy as jnp

import inferax


def _pause():
    time.sleep(0.003)


def logdensity(x):
    # A pause on the host at every evaluation stretches the run, so that a kill lands
    # partway through it; it changes no value.
    jax.debug.callback(_pause)
    return -0.5 * jnp.sum((x - 1.0) ** 2)


TARGET = inferax.Target.from_logdensity(logdensity, jnp.zeros(3))
KERNEL = inferax.samplers.mala(step_size=0.4)
SETTINGS = dict(num_chains=2, num_warmup=60, num_samples=200, chunk_size=10, progress=False)

if __name__ == "__main__":
    inferax.sample(TARGET, KERNEL, jax.random.key(5), checkpoint=sys.argv[1], **SETTINGS)
"""


def load_module(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location("slow_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def state_numbers(run_dir: pathlib.Path) -> list[int]:
    return [int(path.stem.split("-")[1]) for path in run_dir.glob("state-*.npz")]


def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path):
    script = tmp_path / "slow_model.py"
    script.write_text(SLOW_MODEL)
    run_dir = tmp_path / "run"
    child = subprocess.Popen([sys.executable, str(script), str(run_dir)], cwd=tmp_path)
    # Saves: one after init, five during warmup, one at its end, then one per sampling chunk
    # of 10 draws. Kill once a few sampling chunks are on disk, long before the 20th.
    deadline = time.monotonic() + 120
    while max(state_numbers(run_dir), default=-1) < 10:
        assert child.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert max(state_numbers(run_dir)) < 26, "the kill came after the run had finished"

    model = load_module(script)
    resumed = inferax.resume(run_dir, model.TARGET, progress=False)
    reference = inferax.sample(model.TARGET, model.KERNEL, jax.random.key(5), **model.SETTINGS)
    np.testing.assert_array_equal(resumed.draws["x"], reference.draws["x"])
    np.testing.assert_array_equal(resumed.stats["lp"], reference.stats["lp"])
    # The draws written by the killed process are the reference's too: the same key gives
    # the same draws in another process.
    first_file = sorted(run_dir.glob("draws-00000000-*.nc"))[0]
    written, _ = checkpoint._read_draws(first_file)
    np.testing.assert_array_equal(written["x"], reference.draws["x"][:, : written["x"].shape[1]])


TARGET = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum((x - 1.0) ** 2), jnp.zeros(2))
KERNEL = samplers.nuts()
SETTINGS = dict(num_chains=2, num_warmup=40, num_samples=50, chunk_size=10, progress=False)


@pytest.fixture(scope="module")
def reference():
    return inferax.sample(TARGET, KERNEL, jax.random.key(9), **SETTINGS)


def assert_same_draws(post, reference):
    np.testing.assert_array_equal(post.draws["x"], reference.draws["x"])
    for name in reference.stats:
        np.testing.assert_array_equal(post.stats[name], reference.stats[name])


def test_checkpointed_run_equals_plain_run_and_resumes_when_done(tmp_path, reference):
    post = inferax.sample(
        TARGET,
        KERNEL,
        jax.random.key(9),
        checkpoint=tmp_path / "run",
        checkpoint_every=2,
        **SETTINGS,
    )
    assert_same_draws(post, reference)
    assert len(state_numbers(tmp_path / "run")) == checkpoint.STATES_KEPT
    assert_same_draws(inferax.resume(tmp_path / "run", TARGET), reference)


def interrupt_after(monkeypatch, saves: int):
    original = checkpoint.CheckpointStore.save
    calls = {"count": 0}

    def save(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] > saves:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(checkpoint.CheckpointStore, "save", save)


def test_resume_reenters_warmup(tmp_path, monkeypatch, reference):
    interrupt_after(monkeypatch, saves=3)  # init and two warmup chunks
    with pytest.raises(KeyboardInterrupt):
        inferax.sample(TARGET, KERNEL, jax.random.key(9), checkpoint=tmp_path / "run", **SETTINGS)
    monkeypatch.undo()
    assert_same_draws(inferax.resume(tmp_path / "run", TARGET), reference)


def test_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path, monkeypatch, reference):
    interrupt_after(monkeypatch, saves=8)  # into the sampling phase
    with pytest.raises(KeyboardInterrupt):
        inferax.sample(TARGET, KERNEL, jax.random.key(9), checkpoint=tmp_path / "run", **SETTINGS)
    monkeypatch.undo()
    newest = max((tmp_path / "run").glob("state-*.npz"))
    previous = min((tmp_path / "run").glob("state-*.npz"))
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(
        UserWarning,
        match=f"skipped unreadable checkpoint {newest.name}.*resuming from {previous.name}",
    ):
        resumed = inferax.resume(tmp_path / "run", TARGET)
    assert_same_draws(resumed, reference)


def test_failed_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, reference):
    original = checkpoint.CheckpointStore.save
    calls = {"count": 0}

    def save(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] > 4:
            raise OSError(28, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(checkpoint.CheckpointStore, "save", save)
    with pytest.warns(UserWarning, match="No space left on device.*keeps its last good one"):
        post = inferax.sample(
            TARGET, KERNEL, jax.random.key(9), checkpoint=tmp_path / "run", **SETTINGS
        )
    assert_same_draws(post, reference)
    monkeypatch.undo()
    assert_same_draws(inferax.resume(tmp_path / "run", TARGET), reference)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    inferax.sample(TARGET, KERNEL, jax.random.key(9), checkpoint=run_dir, **SETTINGS)
    return run_dir


def test_resume_refuses_a_different_model(finished_run):
    other = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
    with pytest.raises(ValueError, match="not the same run: model: the log density"):
        inferax.resume(finished_run, other)
    wider = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"parameters: the run has \{'x': \[\[2\]"):
        inferax.resume(finished_run, wider)


def test_resume_refuses_different_data(tmp_path):
    def make(y):
        return inferax.Target(
            log_prior=lambda p: -0.5 * jnp.sum(p**2),
            log_likelihood=lambda p, batch: -0.5 * jnp.sum((batch - p[0]) ** 2),
            data=y,
            init=jnp.zeros(1),
        )

    inferax.sample(
        make(jnp.arange(4.0)),
        samplers.ula(0.1),
        jax.random.key(0),
        num_chains=1,
        num_warmup=0,
        num_samples=5,
        checkpoint=tmp_path / "run",
    )
    with pytest.raises(ValueError, match="data: the target's differs from the run's"):
        inferax.resume(tmp_path / "run", make(jnp.arange(4.0) + 1.0))


def test_resume_refuses_different_settings_or_kernel(finished_run):
    with pytest.raises(ValueError, match="num_samples: the run has 50, got 80"):
        inferax.resume(finished_run, TARGET, num_samples=80)
    with pytest.raises(ValueError, match="kernel: the run has nuts"):
        inferax.resume(finished_run, TARGET, samplers.nuts(max_num_doublings=5))


def test_run_directory_errors_come_before_sampling(tmp_path, monkeypatch, finished_run):
    with pytest.raises(ValueError, match="already holds a run"):
        inferax.sample(TARGET, KERNEL, jax.random.key(9), checkpoint=finished_run, **SETTINGS)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot create"):
        inferax.sample(TARGET, KERNEL, jax.random.key(9), checkpoint=blocker / "run", **SETTINGS)
    usage = type("Usage", (), {"total": 10**9, "used": 10**9, "free": 1000})
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(ValueError, match="MB free, and this run needs about"):
        inferax.sample(TARGET, KERNEL, jax.random.key(9), checkpoint=tmp_path / "run", **SETTINGS)
    with pytest.raises(ValueError, match="holds no checkpointed run"):
        inferax.resume(tmp_path / "nothing", TARGET)


def test_saved_posterior_file_is_written_atomically(tmp_path, reference):
    path = tmp_path / "posterior.nc"
    reference.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["posterior.nc"]
    assert os.path.getsize(path) > 0


class _Planted:
    """What an attacker plants: unpickling it would create ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_resume_runs_nothing_from_the_run_directory(tmp_path, finished_run):
    import json
    import pickle
    import shutil

    run_dir = tmp_path / "sent-to-you"
    shutil.copytree(finished_run, run_dir)
    sentinel = tmp_path / "code-ran"
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["kernel_pickle"] = pickle.dumps(_Planted(sentinel)).hex()
    manifest["kernel_config"] = {"setting": "posix.system", "fields": {"command": "true"}}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not the manifest the run saved"):
        inferax.resume(run_dir, TARGET)
    # Even a manifest that passed its checksum would build only inferax's own classes.
    with pytest.raises(ValueError, match="'posix.system' is not a class inferax knows"):
        checkpoint.decode_kernel(manifest["kernel_config"])
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "kernel",
    [
        samplers.nuts(max_num_doublings=6, target_acceptance_rate=0.9),
        samplers.hmc(num_integration_steps=5, divergence_threshold=500.0),
        samplers.mala(0.1),
        samplers.sghmc(1e-3, batch_size=8, friction=2.0, integrator="euler"),
        samplers.sgld_cv(1e-3, batch_size=8, centre="init"),
        samplers.structured_sgld(1e-3, batch_size=8, groups=[["a"], ["b", "c"]], buffer_size=3),
        samplers.mirror_langevin(samplers.LogBarrierBox(-1.0, 2.0), 0.01, scheme="mla"),
        samplers.bregman_moreau_langevin(samplers.Hypentropy(0.5), 0.01, smoothing=0.1),
        samplers.dsgld(1e-3, batch_size=4, local_steps=3, client_probs=(0.25, 0.75)),
    ],
    ids=lambda kernel: kernel.name,
)
def test_kernel_configs_are_saved_as_data_and_rebuilt(kernel):
    import json

    saved = json.loads(json.dumps(checkpoint.encode_kernel(kernel)))
    rebuilt = checkpoint.decode_kernel(saved)
    assert rebuilt == kernel and repr(rebuilt) == repr(kernel)


def test_a_kernel_holding_a_function_is_not_saved_and_must_be_passed_again(tmp_path):
    import optax

    kernel = samplers.sgld(1e-3, batch_size=2, schedule=optax.constant_schedule(1.0))
    assert checkpoint.encode_kernel(kernel) is None
    target = inferax.Target(
        log_prior=lambda p: -0.5 * jnp.sum(p**2),
        log_likelihood=lambda p, batch: -0.5 * jnp.sum((batch - p[0]) ** 2),
        data=jnp.arange(4.0),
        init=jnp.zeros(1),
    )
    settings = dict(num_chains=1, num_warmup=0, num_samples=5, progress=False)
    first = inferax.sample(
        target, kernel, jax.random.key(0), checkpoint=tmp_path / "run", **settings
    )
    with pytest.raises(ValueError, match="not data .a function.*pass it as kernel="):
        inferax.resume(tmp_path / "run", target)
    again = inferax.resume(tmp_path / "run", target, kernel)
    np.testing.assert_array_equal(again.draws["x"], first.draws["x"])


def test_concurrent_saves_of_one_path_never_collide(tmp_path):
    import concurrent.futures

    path = tmp_path / "out.txt"
    contents = [f"writer {i}\n" * 1000 for i in range(40)]

    def save(text):
        checkpoint.write_atomically(path, lambda temporary: temporary.write_text(text))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(save, contents))  # any collision raises here
    assert path.read_text() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_opening_a_run_removes_the_temporaries_of_killed_writes(tmp_path, finished_run):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    killed = run_dir / f".state-00000003.npz.tmp-{int(dead.stdout)}-0a1b2c"
    running = run_dir / f".draws-00000000.nc.tmp-{os.getpid()}-3d4e5f"
    killed.write_bytes(b"half a file")
    running.write_bytes(b"being written")
    checkpoint.CheckpointStore.open(run_dir)
    assert not killed.exists() and running.exists()


RACE = """
import json
import os
import sys
import time
import warnings

from inferax.checkpoint import CheckpointError, CheckpointStore

root = sys.argv[1]
outcomes = []
for trial in range(20):
    run_dir = os.path.join(root, f"run-{trial}")
    start = time.time() + 0.05
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            time.sleep(max(0.0, start - time.time()))
            try:
                CheckpointStore.create(run_dir, {"trial": trial}, 0)
            except CheckpointError:
                os._exit(3)
            time.sleep(0.2)  # hold the run while the other writer tries
            os._exit(0)
        children.append(pid)
    codes = sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children)
    outcomes.append(codes)
print(json.dumps(outcomes))
"""


def test_two_writers_started_together_on_one_run_directory_one_is_refused(tmp_path):
    script = tmp_path / "race.py"
    script.write_text(RACE)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True
    )
    import json

    assert json.loads(result.stdout) == [[0, 3]] * 20


def test_a_run_directory_in_use_is_refused_and_a_killed_runs_lock_is_taken_over(
    tmp_path, finished_run
):
    import json
    import shutil
    import socket

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    lock = run_dir / checkpoint.LOCK
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(ValueError, match=f"in use by process {os.getpid()}"):
        inferax.resume(run_dir, TARGET)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    inferax.resume(run_dir, TARGET)
    assert not lock.exists()  # released when the resume ends


def _corrupt(path: pathlib.Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(os.urandom(len(data)))


@pytest.mark.parametrize("how", ["truncate", "flip", "garbage"])
@pytest.mark.parametrize("which", ["manifest", "newest state", "draws"])
def test_a_corrupt_file_is_never_resumed_into_wrong_draws(tmp_path, reference, which, how):
    """Each corruption ends in a clean refusal, or in the uninterrupted run's draws with a
    warning that names the file."""
    run_dir = tmp_path / "run"
    inferax.sample(TARGET, KERNEL, jax.random.key(9), checkpoint=run_dir, **SETTINGS)
    states = sorted(run_dir.glob("state-*.npz"))
    target = {
        "manifest": run_dir / "manifest.json",
        "newest state": states[-1],
        "draws": sorted(run_dir.glob("draws-*.nc"))[0],
    }[which]
    _corrupt(target, how)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            resumed = inferax.resume(run_dir, TARGET)
        except ValueError:
            return  # a clean refusal
    assert_same_draws(resumed, reference)
    assert any(target.name in str(w.message) for w in caught), [str(w.message) for w in caught]
