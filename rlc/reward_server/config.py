"""The reward server's settings: one frozen dataclass, validated once, handed to every uvicorn worker.

uvicorn starts each of several workers by importing the app, so the settings travel as JSON in one environment
variable rather than as Python objects; secrets never travel that way (the judge's API key is read from
OPENAI_API_KEY and the server's bearer token from TOKEN_ENV_VAR by the worker itself), so the variable is safe to
log.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

ENV_VAR = "RLC_REWARD_SERVER_CONFIG"
TOKEN_ENV_VAR = "RLC_REWARD_TOKEN"  # the bearer token the server requires and the client sends, when set


@dataclass(frozen=True)
class ServerConfig:
    judge_url: str | None = None  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8002/v1
    judge_model: str | None = None  # None: the first model the endpoint lists
    judge_max_tokens: int | None = None  # None: the endpoint's default
    judge_temperature: float = 0.0
    judge_timeout_s: float = 120.0
    code_time_limit_s: float = 5.0  # wall clock, per test case
    code_memory_mb: int = 512  # address space, per test case
    max_sandboxes: int = field(default_factory=lambda: os.cpu_count() or 1)  # per worker process
    allow_unsafe_code: bool = False  # run code tests even where the sandbox cannot isolate them (logged loudly)
    format_reward: bool = False  # rl_verifier's USE_FORMAT_VERIFIER (on there by default): 0.9 answer + 0.1 format
    request_log: str | None = None  # JSONL, one line per scored request (a hash of the sample, not its text)
    verifier_workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))  # per server process
    verifier_timeout_s: float = 20.0  # per text verdict; past it the worker is killed and the sample scores 0
    max_output_chars: int = 1_000_000  # a longer llm_output scores 0 without being read
    max_body_bytes: int = 8 << 20  # a larger request body is answered 413 before it is read
    read_timeout_s: float = 15.0  # a request's headers and body must arrive within this (slow clients)
    max_connections: int = 1024  # per server process; past it new requests are answered 503

    def __post_init__(self) -> None:
        problems = []
        if self.judge_url is not None and not self.judge_url.startswith(("http://", "https://")):
            problems.append(f"judge_url must start with http:// or https://, got {self.judge_url!r}")
        if self.code_time_limit_s <= 0:
            problems.append(f"code_time_limit_s must be > 0, got {self.code_time_limit_s}")
        if self.code_memory_mb < 64:
            problems.append(f"code_memory_mb must be >= 64 (a Python interpreter needs that much), "
                            f"got {self.code_memory_mb}")
        if self.max_sandboxes < 1:
            problems.append(f"max_sandboxes must be >= 1, got {self.max_sandboxes}")
        if self.judge_timeout_s <= 0:
            problems.append(f"judge_timeout_s must be > 0, got {self.judge_timeout_s}")
        for name in ("verifier_workers", "max_output_chars", "max_body_bytes", "max_connections"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("verifier_timeout_s", "read_timeout_s"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if problems:
            raise ValueError("invalid reward server settings: " + "; ".join(problems))

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServerConfig:
        raw = os.environ.get(ENV_VAR)
        return cls(**json.loads(raw)) if raw else cls()
