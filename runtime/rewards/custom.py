"""A user's reward function loaded from a file path, as verl's `custom_reward_function` allows."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any


class RewardFunctionError(ValueError):
    pass


def load_reward_function(path: str, name: str = "compute_score") -> Callable[..., Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise RewardFunctionError(f"custom_reward_function.path: {file} does not exist")
    spec = importlib.util.spec_from_file_location(f"rlc_custom_reward_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as err:
        raise RewardFunctionError(f"custom_reward_function.path: importing {file} failed: "
                                  f"{type(err).__name__}: {err}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise RewardFunctionError(f"custom_reward_function.name: {file} has no function `{name}`")
    try:
        inspect.signature(function).bind("source", "solution", "truth", None)
    except TypeError:
        raise RewardFunctionError(f"custom_reward_function: `{name}` in {file} must accept (data_source, "
                                  "solution_str, ground_truth, extra_info)") from None
    return function
