"""The remote reward API client (seed 003's `reward_api`): rl_verifier's protocol, no reward silently lost.

Design decisions, and why:
- Plain threads over one pooled `httpx.Client`, not asyncio: `score` is called from synchronous code and from
  inside Ray actors, which may already run an event loop; a thread pool of `max_workers` bounds the requests in
  flight, and the connection pool is sized to match so that connections are reused, never queued behind a limit.
- Each sample is retried alone: connection errors, timeouts, 5xx, 408 and 429 are transient and retried with
  exponential backoff and full jitter (so that a restarted server is not hit by every client at once); any other
  4xx is the sample's own fault (the server's `detail` says why) and is not retried.
- One sample can never fail its batch: whatever goes wrong while scoring it (even a bug here) becomes that
  sample's error. A lone surrogate in a model output (not text; it cannot be encoded) is replaced by U+FFFD
  before sending, as a decoder would; the body is sent as ASCII JSON, so nothing in it can fail to encode.
- The server's bearer token, when it has one, comes from RLC_REWARD_TOKEN (never from the config, which is
  saved with the run); a verdict the server reached by failing (`X-Reward-Failure`) is kept in the reply.
- A sample that still fails is never given a made-up score unless the config asks for it: `on_failure="error"`
  raises after the whole batch has been tried, naming how many failed and the first error; `"zero"` scores it 0.0.
  Either way it is counted (`reward_api/failures`).
- Scores come back in input order whatever order the replies arrive in: each result is written to its index.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

OnFailure = Literal["error", "zero"]
_MAX_BACKOFF_S = 30.0
TOKEN_ENV_VAR = "RLC_REWARD_TOKEN"  # the same variable the bundled server reads
_RETRIED_4XX = (408, 429)


class RewardAPIError(RuntimeError):
    """Samples of a batch could not be scored (with `on_failure="error"`); `batch` holds what was scored."""

    def __init__(self, message: str, batch: RewardBatch) -> None:
        super().__init__(message)
        self.batch = batch

    def __reduce__(self) -> tuple[type, tuple[str, RewardBatch]]:  # crosses Ray's process boundary intact
        return type(self), (str(self), self.batch)


@dataclass
class _Outcome:
    score: float | None
    reply: dict[str, Any]
    error: str | None
    attempts: int
    latency_ms: float


@dataclass
class RewardBatch:
    """One batch's verdicts, in input order, with what it cost."""

    scores: list[float]
    replies: list[dict[str, Any]]  # the server's JSON per sample, or {"error": ...} for a failed one
    errors: list[str | None]
    failures: int
    retries: int
    latencies_ms: list[float] = field(repr=False)  # per sample, first attempt to final answer
    latency_p50_ms: float = field(init=False)
    latency_p90_ms: float = field(init=False)
    latency_p99_ms: float = field(init=False)

    def __post_init__(self) -> None:
        self.latency_p50_ms, self.latency_p90_ms, self.latency_p99_ms = _percentiles(self.latencies_ms)

    def metrics(self) -> dict[str, float]:
        return {"reward_api/failures": float(self.failures), "reward_api/retries": float(self.retries),
                "reward_api/latency_p50_ms": self.latency_p50_ms, "reward_api/latency_p90_ms": self.latency_p90_ms,
                "reward_api/latency_p99_ms": self.latency_p99_ms}


def save_jsonl(path: str | os.PathLike, prompts: Sequence[Any], responses: Sequence[str],
               ground_truths: Sequence[Any], batch: RewardBatch, step: int) -> Path:
    """One JSON line per sample (step, index, prompt, response, ground truth, score, reply, error), written to a
    temporary file beside `path` and renamed over it, so a reader never sees half a file."""
    path = Path(path)
    n = len(batch.scores)
    if not len(prompts) == len(responses) == len(ground_truths) == n:
        raise ValueError(f"save_jsonl: {len(prompts)} prompts, {len(responses)} responses, "
                         f"{len(ground_truths)} ground truths for {n} scores")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # backslashreplace: a lone surrogate is written as its JSON escape, so the file stays valid UTF-8 JSON.
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            for i in range(n):
                record = {"step": step, "index": i, "prompt": prompts[i], "response": responses[i],
                          "ground_truth": ground_truths[i], "score": batch.scores[i], "reply": batch.replies[i],
                          "error": batch.errors[i]}
                f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


class RemoteRewardClient:
    """`score(outputs, verification_infos) -> RewardBatch` against an rl_verifier-compatible server. Thread-safe;
    pickles as its settings (a Ray actor may receive one and gets its own connections and threads)."""

    def __init__(self, api_url: str, max_workers: int = 20, timeout: float = 30.0, max_retries: int = 3,
                 on_failure: OnFailure = "error", backoff_base: float = 0.5, token: str | None = None) -> None:
        if not api_url.startswith(("http://", "https://")):
            raise ValueError(f"reward_api.api_url must start with http:// or https://, got {api_url!r}")
        if max_workers < 1 or timeout <= 0 or max_retries < 0 or backoff_base < 0:
            raise ValueError(f"reward_api: need max_workers >= 1, timeout > 0, max_retries >= 0, backoff_base >= 0; "
                             f"got {max_workers}, {timeout}, {max_retries}, {backoff_base}")
        if on_failure not in ("error", "zero"):
            raise ValueError(f"reward_api.on_failure must be 'error' or 'zero', got {on_failure!r}")
        self.api_url = api_url.rstrip("/")
        self.max_workers, self.timeout, self.max_retries = max_workers, timeout, max_retries
        self.on_failure, self.backoff_base = on_failure, backoff_base
        self._token = token
        token = token or os.environ.get(TOKEN_ENV_VAR)
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        self._http = httpx.Client(base_url=self.api_url, timeout=timeout, headers=headers,
                                  limits=httpx.Limits(max_connections=max_workers,
                                                      max_keepalive_connections=max_workers))
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="reward-api")

    @classmethod
    def from_config(cls, api: Any) -> RemoteRewardClient:
        """From the resolved `reward_api` section (attributes or a mapping)."""
        get = api.get if isinstance(api, Mapping) else lambda key, default=None: getattr(api, key, default)
        return cls(get("api_url"), max_workers=get("max_workers", 20), timeout=get("timeout", 30.0),
                   max_retries=get("max_retries", 3), on_failure=get("on_failure", "error"))

    def __reduce__(self) -> tuple[type, tuple]:
        return type(self), (self.api_url, self.max_workers, self.timeout, self.max_retries, self.on_failure,
                            self.backoff_base, self._token)

    def ping(self) -> dict[str, Any]:
        response = self._http.get("/ping")
        response.raise_for_status()
        return response.json()

    def score(self, llm_outputs: Sequence[str], verification_infos: Sequence[str | Mapping | None]) -> RewardBatch:
        if len(llm_outputs) != len(verification_infos):
            raise ValueError(f"{len(llm_outputs)} outputs but {len(verification_infos)} verification_infos")
        outcomes = list(self._pool.map(self._score_one, llm_outputs, verification_infos))
        failed = [(i, o.error) for i, o in enumerate(outcomes) if o.error is not None]
        batch = RewardBatch(scores=[o.score if o.score is not None else 0.0 for o in outcomes],
                            replies=[o.reply for o in outcomes], errors=[o.error for o in outcomes],
                            failures=len(failed), retries=sum(max(o.attempts - 1, 0) for o in outcomes),
                            latencies_ms=[o.latency_ms for o in outcomes])
        if failed and self.on_failure == "error":
            index, error = failed[0]
            raise RewardAPIError(f"{len(failed)} of {len(outcomes)} samples could not be scored by the reward API at "
                                 f"{self.api_url}; first: sample {index}: {error} (set reward_api.on_failure: zero "
                                 "to score such samples 0 and go on)", batch)
        return batch

    def _score_one(self, llm_output: str, verification_info: str | Mapping | None) -> _Outcome:
        start = time.perf_counter()
        try:
            return self._post(_body(llm_output, verification_info), start)
        except Exception as e:  # noqa: BLE001 - whatever it was, it is this sample's failure, not the batch's
            return _failed(f"{type(e).__name__}: {e}", 1, start)

    def _post(self, body: bytes | str, start: float) -> _Outcome:
        if isinstance(body, str):  # a reason the sample cannot be sent
            return _failed(body, 0, start)
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(random.uniform(0, min(_MAX_BACKOFF_S, self.backoff_base * 2 ** (attempt - 1))))
            try:
                response = self._http.post("/reward", content=body)
            except httpx.TransportError as e:  # refused, reset, timed out: transient
                error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                continue
            except httpx.HTTPError as e:  # anything else the transport raises is not going to change
                return _failed(f"{type(e).__name__}: {e}", attempt + 1, start)
            if response.status_code == 200:
                return _parse_reply(response, attempt + 1, start)
            error = f"HTTP {response.status_code}: {_detail(response)}"
            if response.status_code < 500 and response.status_code not in _RETRIED_4XX:
                return _failed(error, attempt + 1, start)
        return _failed(f"{error} (after {self.max_retries + 1} attempts)", self.max_retries + 1, start)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> RemoteRewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    save_jsonl = staticmethod(save_jsonl)


def _body(llm_output: str, verification_info: str | Mapping | None) -> bytes | str:
    """The request body, or why there is none."""
    if verification_info is None:
        return "the sample has no verification_info"
    if not isinstance(llm_output, str):
        return f"the model output is {type(llm_output).__name__}, not text"
    info = verification_info if isinstance(verification_info, str) else json.dumps(verification_info)
    return json.dumps({"llm_output": _as_text(llm_output), "verification_info": info}).encode("ascii")


def _as_text(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD (a surrogate pair becomes the character it encodes)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _parse_reply(response: httpx.Response, attempts: int, start: float) -> _Outcome:
    try:
        reply = response.json()
        score = float(reply["score"])
    except (ValueError, KeyError, TypeError):
        return _failed(f"the reply has no numeric 'score': {response.text[:200]}", attempts, start)
    failure = response.headers.get("x-reward-failure")
    if failure:  # scored 0 by the server for a reason worth keeping (timed out, too long)
        reply = {**reply, "failure": failure}
    return _Outcome(score, reply, None, attempts, (time.perf_counter() - start) * 1000)


def _failed(error: str, attempts: int, start: float) -> _Outcome:
    return _Outcome(None, {"error": error}, error, attempts, (time.perf_counter() - start) * 1000)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))[:500]
    except (ValueError, AttributeError):
        return response.text[:500]


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return 0.0, 0.0, 0.0
    if len(values) == 1:
        return values[0], values[0], values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[89], cuts[98]
