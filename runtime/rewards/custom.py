"""A user's reward function loaded from a Python file, as verl's `custom_reward_function` (path, name) allows.

Everything that can be wrong with it is found when the run starts, not at the first reward call an hour in:
the file is missing, importing it fails (the message names the file and line, and the error), the name is not
a callable in it, or the callable cannot be called as verl calls it, by keyword: fn(data_source=...,
solution_str=..., ground_truth=..., extra_info=...). Each is one RewardFunctionError naming the config key to fix.
The function is returned wrapped so that it is always called that way, whether its caller passes the four
arguments by position or by name: a verl-style `def compute_score(data_source, solution_str, ground_truth,
**kwargs)` works unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIGNATURE = "(data_source=..., solution_str=..., ground_truth=..., extra_info=...)"


class RewardFunctionError(ValueError):
    """custom_reward_function points at something that cannot be used as a reward function."""


def load_reward_function(path: str, name: str = "compute_score") -> Callable[..., Any]:
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise RewardFunctionError(f"custom_reward_function.path: {path} does not exist (looked for {file})")
    module = _import(file)
    function = getattr(module, name, None)
    if not callable(function):
        found = "is not a function" if hasattr(module, name) else "is not defined"
        raise RewardFunctionError(f"custom_reward_function.name: `{name}` {found} in {file}")
    try:
        inspect.signature(function).bind(data_source="", solution_str="", ground_truth="", extra_info=None)
    except TypeError as err:
        raise RewardFunctionError(f"custom_reward_function.name: `{name}` in {file} cannot be called as "
                                  f"{name}{SIGNATURE}: {err}") from None
    except ValueError:  # a builtin without a signature: trust it
        pass

    @functools.wraps(function)
    def by_keyword(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None) -> Any:
        return function(data_source=data_source, solution_str=solution_str, ground_truth=ground_truth,
                        extra_info=extra_info)

    return by_keyword


def _import(file: Path) -> Any:
    # A name unique to the path, registered while the file runs: dataclasses and pickling look modules up there.
    module_name = f"rlc_custom_reward_{hashlib.sha1(str(file).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise RewardFunctionError(f"custom_reward_function.path: {file} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as err:  # noqa: BLE001 - SystemExit from a script counts as a failed import too
        del sys.modules[module_name]
        if isinstance(err, KeyboardInterrupt):
            raise
        message = err.msg if isinstance(err, SyntaxError) else str(err)
        raise RewardFunctionError(f"custom_reward_function.path: importing {file} failed at "
                                  f"{_where(err, file)}: {type(err).__name__}: {message}") from None
    return module


def _where(err: BaseException, file: Path) -> str:
    """`file:line: source` of the failing line in the user's file (a syntax error's own line, or the deepest
    frame of the traceback inside that file)."""
    if isinstance(err, SyntaxError) and err.filename == str(file):
        return f"{file}:{err.lineno}: {(err.text or '').strip()}"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == str(file)]
    if not frames:
        return str(file)
    return f"{file}:{frames[-1].lineno}: {(frames[-1].line or '').strip()}"
