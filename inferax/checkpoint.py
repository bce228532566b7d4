"""A run directory that survives kills: the sampler's state after each saved chunk, and the
draws so far, each written atomically.

Layout of ``run_dir``:

- ``manifest.json``: the settings, the key, the kernel and a fingerprint of the target;
- ``state-NNNNNN.npz``: the newest two saved points (phase, next step, the sampler state as
  a flat list of arrays, timing, and which draw files hold the draws so far), each with a
  checksum;
- ``draws-FIRST-LAST.nc``: the draws and statistics of draws ``FIRST`` to ``LAST - 1``, a
  netCDF file written through xarray.

A file is written under a temporary name, flushed to disk with ``fsync`` and renamed, so a
kill leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import secrets
import shutil
import socket
import warnings
from typing import Any

import numpy as np
import xarray as xr

from inferax.kernel import SETTING_CLASSES

MANIFEST = "manifest.json"
STATES_KEPT = 2


class CheckpointError(ValueError):
    """A run directory cannot be created, written or resumed from."""


class ManifestChanged(CheckpointError):
    """The manifest is not the one the run's states were saved with: resume refuses."""


@dataclasses.dataclass(frozen=True)
class SavedPoint:
    """A point the run can continue from."""

    phase: str  # "warmup", "sampling" or "done"
    next_index: int  # the next warmup step, or the next draw
    leaves: list[np.ndarray]
    timing: dict[str, float]
    draw_files: list[str]
    name: str


def _fsync_directory(path: pathlib.Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


TEMPORARY_MARK = ".tmp-"
"""Temporary files are named ``.<name>.tmp-<pid>-<random>`` next to their target."""


def write_atomically(path: pathlib.Path, write) -> None:
    """``write(temporary_path)``, then fsync and rename onto ``path``. The temporary name
    holds the pid and a random part, so two writers of one path never share it."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}-{secrets.token_hex(6)}")
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    _fsync_directory(path.parent)


def _remove_stale_temporaries(run_dir: pathlib.Path) -> None:
    """Removes the temporary files of killed writes: those whose writing process is gone."""
    for path in run_dir.glob(f".*{TEMPORARY_MARK}*"):
        pid = path.name.rpartition(TEMPORARY_MARK)[2].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                path.unlink()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _state_checksum(leaves: list[np.ndarray], meta: dict) -> str:
    """SHA-256 of a state's arrays and of every metadata entry but the checksum itself."""
    digest = hashlib.sha256()
    for leaf in leaves:
        digest.update(str((leaf.dtype.str, leaf.shape)).encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    recorded = {key: value for key, value in meta.items() if key != "checksum"}
    digest.update(json.dumps(recorded, sort_keys=True).encode())
    return digest.hexdigest()


def _file_checksum(path: pathlib.Path) -> str:
    """SHA-256 of a file's bytes; an unreadable file has none and fails every comparison."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return "unreadable"
    return digest.hexdigest()


MANIFEST_KEYS = frozenset({"settings", "key", "kernel", "fingerprint", "x64"})
"""What every manifest holds."""

LOCK = "lock"
"""The run directory's lock file: the pid and host of the process that writes the run."""


def acquire_lock(run_dir: pathlib.Path, what: str) -> pathlib.Path:
    """Takes the run directory's exclusive lock for this process, or refuses.

    The lock is a file created with ``O_EXCL``, holding this process's pid and host. A lock
    whose process is gone (same host, pid not running) is stale: a killed run left it, and it
    is taken over.

    Raises:
      CheckpointError: another live process holds the lock.
    """
    path = run_dir / LOCK
    owner = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}
            stale = holder.get("host") == owner["host"] and not _process_alive(
                int(holder.get("pid", -1))
            )
            if not stale:
                raise CheckpointError(
                    f"{what}: '{run_dir}' is in use by process {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}; one run directory takes one writer at a time "
                    f"(delete '{path}' only if that process is gone)"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(owner, handle)
        return path
    raise CheckpointError(f"{what}: cannot take the lock '{path}'")


RUN_FILES = (MANIFEST, "state-*.npz", "draws-*.nc", f".*{TEMPORARY_MARK}*")
"""What a run writes in its directory; ``remove_run`` deletes these and nothing else."""


def remove_run(run_dir) -> None:
    """Deletes the files a run wrote in ``run_dir`` (its manifest, states, draws and
    temporaries), under the run's lock; anything else in the directory stays.

    Raises:
      CheckpointError: the directory holds no inferax run, or a live process is using it.
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise CheckpointError(
            f"'{run_dir}' holds no inferax run (no {MANIFEST}); nothing in it is deleted"
        )
    lock = acquire_lock(run_dir, "replacing the run")
    try:
        for pattern in RUN_FILES:
            for path in run_dir.glob(pattern):
                path.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def clear_for_new_run(run_dir, *, force: bool) -> None:
    """Makes way for a new run in ``run_dir``: an empty or missing directory is fine, a
    previous inferax run is replaced only with ``force`` (``remove_run``), and a directory
    that holds anything else is never touched.

    Raises:
      CheckpointError: what stands in the way, and how to proceed.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return
    if not (run_dir / MANIFEST).is_file():
        raise CheckpointError(
            f"{run_dir} exists and holds no inferax run; move it away or choose another --out"
        )
    if not force:
        raise CheckpointError(
            f"{run_dir} holds a previous run: continue it with --resume, or replace it "
            "with --force"
        )
    remove_run(run_dir)


class CheckpointStore:
    """One run directory, locked by this process while it is open."""

    def __init__(self, run_dir: pathlib.Path, manifest: dict[str, Any], lock: pathlib.Path):
        self.run_dir = run_dir
        self.manifest = manifest
        self._lock = lock
        self.manifest_checksum = _file_checksum(run_dir / MANIFEST)
        self.draw_checksums: dict[str, str] = {}

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        """Gives the run directory's lock back."""
        if self._lock is not None:
            with contextlib.suppress(FileNotFoundError):
                self._lock.unlink()
            self._lock = None

    @classmethod
    def create(cls, run_dir, manifest: dict[str, Any], expected_bytes: int) -> CheckpointStore:
        """Makes ``run_dir`` for a new run, refusing one that already holds a run, one that
        cannot be written, and a disk without room for the draws."""
        run_dir = pathlib.Path(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CheckpointError(f"checkpoint: cannot create '{run_dir}': {error}") from error
        try:
            lock = acquire_lock(run_dir, "checkpoint")
        except OSError as error:
            raise CheckpointError(f"checkpoint: cannot write to '{run_dir}': {error}") from error
        try:
            if (run_dir / MANIFEST).exists():
                raise CheckpointError(
                    f"checkpoint: '{run_dir}' already holds a run; continue it with "
                    "inferax.resume, or give an empty directory"
                )
            free = shutil.disk_usage(run_dir).free
            if free < expected_bytes:
                raise CheckpointError(
                    f"checkpoint: '{run_dir}' has {free / 1e6:.1f} MB free, and this run "
                    f"needs about {expected_bytes / 1e6:.1f} MB for its draws and states"
                )
            try:
                write_atomically(
                    run_dir / MANIFEST,
                    lambda path: path.write_text(json.dumps(manifest, indent=1)),
                )
            except OSError as error:
                raise CheckpointError(
                    f"checkpoint: cannot write to '{run_dir}': {error}"
                ) from error
            return cls(run_dir, manifest, lock)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            raise

    @classmethod
    def open(cls, run_dir) -> CheckpointStore:
        run_dir = pathlib.Path(run_dir)
        try:
            manifest = json.loads((run_dir / MANIFEST).read_text())
        except FileNotFoundError as error:
            raise CheckpointError(f"resume: '{run_dir}' holds no checkpointed run") from error
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"resume: cannot read '{run_dir / MANIFEST}': {error}"
            ) from error
        missing = MANIFEST_KEYS - set(manifest) if isinstance(manifest, dict) else MANIFEST_KEYS
        if missing:
            raise CheckpointError(
                f"resume: '{run_dir / MANIFEST}' is not an inferax manifest (it lacks "
                f"{sorted(missing)})"
            )
        lock = acquire_lock(run_dir, "resume")
        _remove_stale_temporaries(run_dir)
        return cls(run_dir, manifest, lock)

    def _state_paths(self) -> list[pathlib.Path]:
        return sorted(self.run_dir.glob("state-*.npz"))

    def save(
        self,
        phase: str,
        next_index: int,
        leaves: list[np.ndarray],
        timing: dict[str, float],
        draw_files: list[str],
        new_draws: tuple[int, int, dict, dict] | None = None,
    ) -> list[str]:
        """Writes the draws since the last save (if any), then the state that lists them.

        Returns:
          The draw files the saved state lists.
        """
        draw_files = list(draw_files)
        if new_draws is not None:
            first, last, draws, stats = new_draws
            name = f"draws-{first:08d}-{last:08d}.nc"
            dataset = _draws_dataset(draws, stats)
            write_atomically(
                self.run_dir / name, lambda path: dataset.to_netcdf(path, engine="h5netcdf")
            )
            self.draw_checksums[name] = _file_checksum(self.run_dir / name)
            draw_files.append(name)
        leaves = [np.asarray(leaf) for leaf in leaves]
        meta = {
            "phase": phase,
            "next_index": int(next_index),
            "timing": timing,
            "draw_files": draw_files,
            "draw_checksums": {name: self.draw_checksums[name] for name in draw_files},
            "manifest_checksum": self.manifest_checksum,
        }
        meta["checksum"] = _state_checksum(leaves, meta)
        existing = self._state_paths()
        number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        path = self.run_dir / f"state-{number:06d}.npz"
        arrays = {f"leaf_{i:05d}": leaf for i, leaf in enumerate(leaves)}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

        def write(temporary):
            with open(temporary, "wb") as handle:
                np.savez(handle, **arrays)

        write_atomically(path, write)
        for old in existing[: max(0, len(existing) + 1 - STATES_KEPT)]:
            with contextlib.suppress(OSError):
                old.unlink()
        return draw_files

    def _check_manifest_checksum(self, recorded: str) -> None:
        if recorded != self.manifest_checksum:
            raise ManifestChanged(
                f"resume: refused, '{self.run_dir / MANIFEST}' is not the manifest the run "
                "saved (its checksum differs)"
            )

    def check_manifest(self) -> None:
        """Refuses a manifest other than the one the run's newest readable state was saved
        with, before anything in it is used.

        Raises:
          ManifestChanged: the checksums differ.
        """
        for path in reversed(self._state_paths()):
            try:
                with np.load(path, allow_pickle=False) as archive:
                    recorded = json.loads(archive["meta"].tobytes().decode())["manifest_checksum"]
            except Exception:  # noqa: BLE001, S112  (an unreadable state is latest()'s to report)
                continue
            self._check_manifest_checksum(recorded)
            return

    def latest(self) -> SavedPoint | None:
        """The newest saved point that reads back whole, warning about each one skipped."""
        skipped = []
        for path in reversed(self._state_paths()):
            try:
                point = self._read_state(path)
                for name in point.draw_files:
                    _read_draws(self.run_dir / name)
            except ManifestChanged:
                raise
            except Exception as error:  # noqa: BLE001  (any unreadable file means: go back one)
                skipped.append(f"{path.name} ({type(error).__name__}: {error})")
                continue
            if skipped:
                warnings.warn(
                    f"resume: skipped unreadable checkpoint {'; '.join(skipped)}; "
                    f"resuming from {path.name}",
                    stacklevel=3,
                )
            return point
        if skipped:
            warnings.warn(
                f"resume: no readable checkpoint ({'; '.join(skipped)}); starting over",
                stacklevel=3,
            )
        return None

    def _read_state(self, path: pathlib.Path) -> SavedPoint:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
            names = sorted(name for name in archive.files if name.startswith("leaf_"))
            leaves = [archive[name] for name in names]
        if _state_checksum(leaves, meta) != meta["checksum"]:
            raise CheckpointError("checksum mismatch")
        self._check_manifest_checksum(meta["manifest_checksum"])
        for name in meta["draw_files"]:
            if _file_checksum(self.run_dir / name) != meta["draw_checksums"][name]:
                raise CheckpointError(f"{name}: checksum mismatch")
        self.draw_checksums = dict(meta["draw_checksums"])
        return SavedPoint(
            phase=meta["phase"],
            next_index=meta["next_index"],
            leaves=leaves,
            timing=meta["timing"],
            draw_files=meta["draw_files"],
            name=path.name,
        )

    def load_draws(self, draw_files: list[str]) -> tuple[list[dict], list[dict]]:
        draws, stats = [], []
        for name in draw_files:
            chunk_draws, chunk_stats = _read_draws(self.run_dir / name)
            draws.append(chunk_draws)
            stats.append(chunk_stats)
        return draws, stats


def _draws_dataset(draws: dict, stats: dict) -> xr.Dataset:
    variables = {}
    for prefix, group in (("draws", draws), ("stats", stats)):
        for name, values in group.items():
            values = np.asarray(values)
            dims = ("chain", "draw", *(f"{prefix}:{name}:dim_{i}" for i in range(values.ndim - 2)))
            variables[f"{prefix}:{name}"] = (dims, values)
    return xr.Dataset(variables)


def _read_draws(path: pathlib.Path) -> tuple[dict, dict]:
    with xr.open_dataset(path, engine="h5netcdf") as dataset:
        dataset = dataset.load()
    groups: dict[str, dict] = {"draws": {}, "stats": {}}
    for key, variable in dataset.data_vars.items():
        prefix, name = key.split(":", 1)
        groups[prefix][name] = np.asarray(variable.values)
    return groups["draws"], groups["stats"]


class UnsavableSetting(TypeError):
    """A config value that cannot be written as data (a function, an array)."""


def encode_setting(value) -> Any:
    """A kernel config (or any value it holds) as JSON data: numbers, strings, tuples and
    registered setting classes with their fields.

    Raises:
      UnsavableSetting: the value holds something else, such as a schedule function.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if np.isfinite(value) else {"float": repr(value)}
    if isinstance(value, tuple | list):
        return {"tuple": [encode_setting(item) for item in value]}
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    if SETTING_CLASSES.get(name) is type(value) and dataclasses.is_dataclass(value):
        fields = {
            field.name: encode_setting(getattr(value, field.name))
            for field in dataclasses.fields(value)
            if field.init
        }
        return {"setting": name, "fields": fields}
    raise UnsavableSetting(f"{type(value).__name__} cannot be saved as data")


def decode_setting(data) -> Any:
    """The value ``encode_setting`` wrote. Only classes in ``inferax.kernel.SETTING_CLASSES``
    are built, through their own constructors (which check every field); nothing else runs.

    Raises:
      ValueError: the data names a class inferax does not know, or is malformed.
    """
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, dict) and set(data) == {"float"}:
        if data["float"] not in ("nan", "inf", "-inf"):
            raise ValueError(f"a saved setting is malformed: {str(data)[:80]}")
        return float(data["float"])
    if isinstance(data, dict) and set(data) == {"tuple"} and isinstance(data["tuple"], list):
        return tuple(decode_setting(item) for item in data["tuple"])
    if isinstance(data, dict) and set(data) == {"setting", "fields"}:
        cls = SETTING_CLASSES.get(data["setting"])
        if cls is None:
            raise ValueError(
                f"the saved setting {data['setting']!r} is not a class inferax knows (import "
                "the module that defines it, such as inferax.samplers, or pass it again)"
            )
        if not isinstance(data["fields"], dict):
            raise ValueError(f"the saved setting {data['setting']!r} has malformed fields")
        return cls(**{name: decode_setting(value) for name, value in data["fields"].items()})
    raise ValueError(f"a saved setting is malformed: {str(data)[:80]}")


def encode_kernel(kernel) -> dict | None:
    """The kernel config as data, for ``resume`` to rebuild; ``None`` if it holds something
    that is not data (a schedule function, a blackjax build function)."""
    try:
        return encode_setting(kernel)
    except UnsavableSetting:
        return None


def decode_kernel(encoded: dict):
    """The kernel ``encode_kernel`` saved."""
    return decode_setting(encoded)
