"""The HTTP app: rl_verifier's wire protocol, dispatching each request to one verifier.

`POST /reward` takes {"llm_output": str, "verification_info": str (JSON)} and answers {"score": float}, nothing
else, as rl_verifier does. Every request stands alone, so one bad sample never fails the others of its batch:
- A request that cannot be scored as sent is a 422 whose `detail` says why: a body that is not a JSON object of
  two strings, verification_info that is not JSON, nests too deeply, holds a lone surrogate, lacks `type` or
  `answer`, names an unknown type (or not a string), or carries a malformed answer. Never a 500 for input.
- An output that cannot be scored (longer than `max_output_chars`, a verifier past its deadline, out of memory)
  scores 0.0, the model's fault like a missing `\\boxed{}`; the reason goes in the `X-Reward-Failure` header and
  the server's log, never into the body, which stays rl_verifier's.
- A failing dependency (the judge) is a 502 and a verifier bug a 500, both of which clients retry.
- With a token set (`--token` or RLC_REWARD_TOKEN), /reward needs `Authorization: Bearer <token>` (else 401);
  /ping stays open for health checks. A body over `max_body_bytes` is a 413, refused on its Content-Length
  before it is read when it declares one.
Text verifiers run in worker processes under a deadline (`pool`); the event loop itself only parses, checks and
waits, so `/ping` answers while verifiers run. `GET /ping` answers {"status": "ok", ...} with what this server
can score.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Request, Response
from starlette.requests import ClientDisconnect

from rlc.reward_server.config import TOKEN_ENV_VAR, ServerConfig
from rlc.reward_server.pool import VerifierPool
from rlc.reward_server.sandbox import isolation, refusal
from rlc.reward_server.verifiers import (
    SERVICE_VERIFIERS,
    TEXT_VERIFIERS,
    TYPES,
    BadVerificationInfo,
    Context,
    Unscorable,
    UpstreamError,
    score_text,
)
from rlc.reward_server.verifiers.extract import assistant_response
from rlc.reward_server.verifiers.format_check import format_score, with_format
from rlc.reward_server.verifiers.math_answers import RL_VERIFIER_ANTLR, latex_parser

log = logging.getLogger("rlc.reward_server")
MAX_NESTING = 32  # of verification_info; rl_verifier's own datasets nest 4 deep
FAILURE_HEADER = "X-Reward-Failure"
_CLOSE = {"Connection": "close"}  # after a 413: not reading (and discarding) the rest of the body


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """The app; without `config`, the settings `serve` put in the environment (how uvicorn workers get them)."""
    config = config or ServerConfig.from_env()
    token = os.environ.get(TOKEN_ENV_VAR, "").encode()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        judge = _judge_client(config)
        state["ctx"] = Context(config, judge)
        state["pool"] = VerifierPool(config.verifier_workers, config.verifier_timeout_s)
        state["pool"].start()
        _log_isolation(config)  # probed once now, not inside the first code request
        if latex_parser() != RL_VERIFIER_ANTLR:
            log.warning("math-verify parses LaTeX with antlr4 %s here, rl_verifier with %s: some answers (such as "
                        "50\\%%) score differently; install antlr4-python3-runtime==%s where nothing pins 4.9",
                        latex_parser(), RL_VERIFIER_ANTLR, RL_VERIFIER_ANTLR)
        try:
            yield
        finally:
            state["pool"].close()
            if judge is not None:
                await judge.aclose()

    app = FastAPI(title="rlc reward server", lifespan=lifespan)

    @app.get("/ping")
    async def ping() -> dict[str, Any]:
        return {"status": "ok", "message": "rlc reward server is running", "types": TYPES,
                "network_isolation": isolation()["net_namespace"], "isolation": isolation(),
                "unsafe_code_allowed": config.allow_unsafe_code, "judge": config.judge_url is not None,
                "format_reward": config.format_reward, "auth": bool(token), "latex_parser": latex_parser()}

    @app.post("/reward")
    async def reward(request: Request, response: Response) -> dict[str, float]:
        _check_token(request, token)
        llm_output, raw_info = _parse_body(await _read_body(request, config.max_body_bytes))
        vtype, info = _parse_info(raw_info)
        try:
            score = await _score(vtype, llm_output, info, config, state)
        except Unscorable as e:
            log.warning("sample %s (%s) scored 0: %s", sample_id(llm_output, raw_info), vtype, e)
            response.headers[FAILURE_HEADER] = str(e)
            score = 0.0
        if config.request_log:
            _log_request(config.request_log, llm_output, raw_info, vtype, score)
        return {"score": score}

    return app


async def _score(vtype: str, llm_output: str, info: dict[str, Any], config: ServerConfig,
                 state: dict[str, Any]) -> float:
    if len(llm_output) > config.max_output_chars:
        raise Unscorable(f"llm_output has {len(llm_output)} characters, over this server's max_output_chars "
                         f"({config.max_output_chars})")
    output = assistant_response(llm_output)
    pool: VerifierPool = state["pool"]
    try:
        if vtype in TEXT_VERIFIERS:
            score = await pool.run(score_text, vtype, output, info["answer"])
        else:
            score = await SERVICE_VERIFIERS[vtype](output, info["answer"], state["ctx"])
        if config.format_reward:
            score = with_format(score, await pool.run(format_score, output, vtype, info.get("language", "python")))
    except BadVerificationInfo as e:
        raise HTTPException(status_code=422, detail=str(e)) from None
    except UpstreamError as e:
        raise HTTPException(status_code=502, detail=str(e)) from None
    except Unscorable:
        raise
    except Exception as e:  # a verifier bug: logged here, a retryable 500 for the client
        log.exception("%s verifier failed", vtype)
        raise HTTPException(status_code=500, detail=f"{vtype} verifier failed: {type(e).__name__}: {e}") from e
    return score


def _check_token(request: Request, token: bytes) -> None:
    if not token:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
        raise HTTPException(status_code=401, detail="this server requires 'Authorization: Bearer <token>' (the "
                            f"client reads the token from {TOKEN_ENV_VAR})", headers={"WWW-Authenticate": "Bearer"})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(status_code=413, detail=f"the request body is {declared} bytes, over this server's "
                                                    f"max_body_bytes ({limit})", headers=_CLOSE)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(status_code=413, detail=f"the request body is over this server's max_body_bytes "
                                                            f"({limit})", headers=_CLOSE)
            chunks.append(chunk)
    except ClientDisconnect:  # gone (or cut off by the read deadline): nobody to answer
        raise HTTPException(status_code=400, detail="the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def _parse_body(body: bytes) -> tuple[str, str]:
    shape = "the request body must be a JSON object with string fields 'llm_output' and 'verification_info'"
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as e:  # ValueError covers JSONDecodeError and bytes that are not UTF-8
        raise HTTPException(status_code=422, detail=f"{shape}: {str(e)[:200]}") from None
    if not isinstance(parsed, dict):
        raise HTTPException(status_code=422, detail=f"{shape}, got {type(parsed).__name__}")
    for field in ("llm_output", "verification_info"):
        if not isinstance(parsed.get(field), str):
            got = "nothing" if field not in parsed else type(parsed[field]).__name__
            raise HTTPException(status_code=422, detail=f"{shape}; {field} is {got}")
        _refuse_surrogates(parsed[field], field)
    return parsed["llm_output"], parsed["verification_info"]


def _parse_info(raw: str) -> tuple[str, dict[str, Any]]:
    try:
        info = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise HTTPException(status_code=422, detail=f"verification_info must be a JSON string: {str(e)[:200]}") \
            from None
    _check_tree(info)
    if not isinstance(info, dict) or "type" not in info or "answer" not in info:
        raise HTTPException(status_code=422, detail="verification_info must contain 'answer' and 'type' fields. "
                                                    f"Received: {raw[:300]}")
    vtype = info["type"]
    if not isinstance(vtype, str) or vtype not in TYPES:
        raise HTTPException(status_code=422, detail=f"The verification type {vtype!r:.100} is not supported; this "
                                                    f"server scores {', '.join(TYPES)}")
    if not isinstance(info["answer"], dict):
        raise HTTPException(status_code=422, detail=f"{vtype}: verification_info.answer must be an object, got "
                                                    f"{type(info['answer']).__name__}")
    return vtype, info


def _check_tree(value: Any) -> None:
    """No deeper than MAX_NESTING, no lone surrogate (not text: it cannot be encoded for a program or a log)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise HTTPException(status_code=422, detail=f"verification_info nests more than {MAX_NESTING} levels")
        if isinstance(node, str):
            _refuse_surrogates(node, "verification_info")
        elif isinstance(node, dict):
            stack.extend((item, depth + 1) for pair in node.items() for item in pair)
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)


def _refuse_surrogates(text: str, field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise HTTPException(status_code=422, detail=f"{field} holds a lone surrogate ({text[e.start]!a} at "
                                                    f"character {e.start}), which is not text") from None


def _log_isolation(config: ServerConfig) -> None:
    report = isolation()
    if report["isolated"]:
        log.info("code tests run isolated: %s", report["memory_limit"])
    elif config.allow_unsafe_code:
        log.warning("UNSAFE: --allow-unsafe-code: code tests run WITHOUT isolation, as uid %d, able to read and "
                    "write what this server can. %s", os.getuid(), refusal(report))
    else:
        log.warning("%s", refusal(report))


def _judge_client(config: ServerConfig) -> httpx.AsyncClient | None:
    if config.judge_url is None:
        return None
    key = os.environ.get("OPENAI_API_KEY")  # never logged: httpx does not log headers
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=config.judge_url.rstrip("/") + "/", headers=headers,
                             timeout=config.judge_timeout_s)


def sample_id(llm_output: str, verification_info: str) -> str:
    """A short stable name for one sample: what the request log records instead of the text itself."""
    return hashlib.sha256(f"{llm_output}\0{verification_info}".encode()).hexdigest()[:16]


def _log_request(path: str, llm_output: str, verification_info: str, vtype: str, score: float) -> None:
    line = json.dumps({"sample": sample_id(llm_output, verification_info), "type": vtype, "score": score,
                       "pid": os.getpid()}) + "\n"
    # One O_APPEND write per line: lines from several worker processes interleave whole.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
