"""Model files for the command line: a Python file that defines a NumPyro ``model`` and the
``data`` it takes. The file is the user's own code, and loading it runs it."""

from __future__ import annotations

import pathlib
import runpy
from collections.abc import Callable, Mapping


class ModelFileError(ValueError):
    """A model file that cannot be loaded, said in one line."""


def load_model_file(path: pathlib.Path) -> tuple[Callable, dict, list[str] | None]:
    """``(model, data, data_args)`` from a model file: the NumPyro ``model`` it defines,
    ``data`` (a dict of the model's arguments) and optionally ``data_args``.

    Raises:
      ModelFileError: a one-line message naming the file and what is wrong.
    """
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file")
    try:
        # The user's own model file: running it is what `inferax run` is for.
        namespace = runpy.run_path(str(path), run_name="inferax_model")
    except SyntaxError as error:
        raise ModelFileError(f"{path}, line {error.lineno}: syntax error: {error.msg}") from error
    except Exception as error:
        raise ModelFileError(
            f"{path} failed while loading: {type(error).__name__}: {error}"
        ) from error
    model = namespace.get("model")
    if model is None:
        raise ModelFileError(f"{path} defines no `model` (a NumPyro model function)")
    if not callable(model):
        raise ModelFileError(f"{path}: `model` must be a function, got {type(model).__name__}")
    data = namespace.get("data", {})
    if not isinstance(data, Mapping):
        raise ModelFileError(
            f"{path}: `data` must be a dict of the model's arguments, got {type(data).__name__}"
        )
    data_args = namespace.get("data_args")
    if data_args is not None:
        data_args = [str(name) for name in data_args]
    return model, dict(data), data_args


__all__ = ["ModelFileError", "load_model_file"]
