"""The bundled reward server (`rlc reward-server`): II-Thought rl_verifier's protocol, scored without Docker.

Nothing heavy is imported here: fastapi, uvicorn and math-verify come with the `runtime` extra and load only
when `serve` runs, so that importing `rlc` (and its CLI) never needs them. Modules: `config` (settings), `app`
(HTTP), `verifiers/` (one scoring rule each), `pool` (worker processes with deadlines for the verifiers that read
model output), `deadline` (slow-client guard), `sandbox` (running submitted code isolated, or refusing to) with
`bwrap`, `seccomp`, `cgroups` and `probe` (what isolates it, and what holds on this host), `process` (starting the
server as a child process, for tests, benchmarks and end-to-end runs).
"""

from __future__ import annotations

import logging
import os
import resource
from typing import Any

from rlc.reward_server.config import ENV_VAR, TOKEN_ENV_VAR, ServerConfig

__all__ = ["serve", "ServerConfig"]
_SPARE_FDS = 256  # beyond one per connection: sandboxes' files and pipes, the pool's, the log's


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, judge_url: str | None = None, *,
          token: str | None = None, log_level: str = "info", access_log: bool = False, **settings: Any) -> None:
    """Serve until interrupted. `settings` are `ServerConfig` fields; `token` (else $RLC_REWARD_TOKEN) makes
    /reward require it as a bearer token. Raises ValueError (one message listing every problem) for bad
    settings, and ImportError naming the `runtime` extra when fastapi/uvicorn are missing."""
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    unknown = sorted(set(settings) - set(ServerConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown reward server settings: {', '.join(unknown)}")
    config = ServerConfig(judge_url=judge_url, **{k: v for k, v in settings.items() if v is not None})
    try:
        import uvicorn

        from rlc.reward_server.deadline import DeadlineH11Protocol  # also fails here, with the hint, if missing
    except ImportError as e:
        raise ImportError(f"the reward server needs the runtime extra (pip install 'rlc[runtime]'): {e}") from e
    _raise_fd_limit(config.max_connections + _SPARE_FDS)
    os.environ[ENV_VAR] = config.to_env()
    if token:
        os.environ[TOKEN_ENV_VAR] = token  # inherited by the workers, never written into the settings
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(TOKEN_ENV_VAR):
        logging.getLogger("rlc.reward_server").warning(
            "listening on %s without a token: anyone who can reach this port can run verifiers (set --token or %s)",
            host, TOKEN_ENV_VAR)
    # An import string and a factory, so that each of several worker processes builds its own app from ENV_VAR.
    uvicorn.run("rlc.reward_server.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=access_log, http=DeadlineH11Protocol,
                limit_concurrency=config.max_connections, timeout_keep_alive=5,
                h11_max_incomplete_event_size=64 << 10)


def _raise_fd_limit(wanted: int) -> None:
    """Lift the soft descriptor limit towards the hard one: the connection cap, not the limit, should bind."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        logging.getLogger("rlc.reward_server").warning(
            "the descriptor limit (%d) is below max_connections + %d; lower --max-connections or raise ulimit -n",
            hard, _SPARE_FDS)
