"""The bundled reward server (`rlc reward-server`): II-Thought rl_verifier's protocol, scored without Docker.

Nothing heavy is imported here: fastapi, uvicorn and math-verify come with the `runtime` extra and load only
when `serve` runs, so that importing `rlc` (and its CLI) never needs them. Modules: `config` (settings), `app`
(HTTP), `verifiers/` (one scoring rule each), `sandbox` (running submitted code isolated, or refusing to) with
`bwrap`, `seccomp`, `cgroups` and `probe` (what isolates it, and what holds on this host), `process` (starting
the server as a child process, for tests, benchmarks and end-to-end runs).
"""

from __future__ import annotations

import os

from rlc.reward_server.config import ENV_VAR, ServerConfig

__all__ = ["serve", "ServerConfig"]


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, judge_url: str | None = None, *,
          judge_model: str | None = None, judge_max_tokens: int | None = None, code_time_limit_s: float = 5.0,
          code_memory_mb: int = 512, max_sandboxes: int | None = None, allow_unsafe_code: bool = False,
          format_reward: bool = False, request_log: str | None = None, log_level: str = "info",
          access_log: bool = False) -> None:
    """Serve until interrupted. Raises ValueError (one message listing every problem) for bad settings, and
    ImportError naming the `runtime` extra when fastapi/uvicorn are missing."""
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    config = ServerConfig(judge_url=judge_url, judge_model=judge_model, judge_max_tokens=judge_max_tokens,
                          code_time_limit_s=code_time_limit_s, code_memory_mb=code_memory_mb,
                          allow_unsafe_code=allow_unsafe_code,
                          format_reward=format_reward, request_log=request_log,
                          **({"max_sandboxes": max_sandboxes} if max_sandboxes is not None else {}))
    try:
        import uvicorn

        import rlc.reward_server.app  # noqa: F401  (fail here, with the hint, rather than in each worker)
    except ImportError as e:
        raise ImportError(f"the reward server needs the runtime extra (pip install 'rlc[runtime]'): {e}") from e
    os.environ[ENV_VAR] = config.to_env()
    # An import string and a factory, so that each of several worker processes builds its own app from ENV_VAR.
    uvicorn.run("rlc.reward_server.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=access_log)
