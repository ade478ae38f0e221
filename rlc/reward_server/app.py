"""The HTTP app: rl_verifier's wire protocol, dispatching each request to one verifier.

`POST /reward` takes {"llm_output": str, "verification_info": str (JSON)} and answers {"score": float}, nothing
else, as rl_verifier does. A request that cannot be scored as sent is a 422 whose `detail` says why (not JSON, no
`type` or `answer`, an unknown or unsupported type, a malformed answer); a failing dependency (the judge) is a
502 and a verifier bug a 500, both of which clients retry. Every request stands alone, so one bad sample never
fails the others of its batch. `GET /ping` answers {"status": "ok", ...} with what this server can score.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from rlc.reward_server.config import ServerConfig
from rlc.reward_server.sandbox import isolation, refusal
from rlc.reward_server.verifiers import UNSUPPORTED, VERIFIERS, BadVerificationInfo, Context, UpstreamError
from rlc.reward_server.verifiers.extract import assistant_response
from rlc.reward_server.verifiers.format_check import WEIGHT, format_score

log = logging.getLogger("rlc.reward_server")


class RewardRequest(BaseModel):
    llm_output: str
    verification_info: str


class RewardResponse(BaseModel):
    score: float


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """The app; without `config`, the settings `serve` put in the environment (how uvicorn workers get them)."""
    config = config or ServerConfig.from_env()
    state: dict[str, Context] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        judge = _judge_client(config)
        state["ctx"] = Context(config, judge)
        _log_isolation(config)  # probed once now, not inside the first code request
        try:
            yield
        finally:
            if judge is not None:
                await judge.aclose()

    app = FastAPI(title="rlc reward server", lifespan=lifespan)

    @app.get("/ping")
    async def ping() -> dict[str, Any]:
        return {"status": "ok", "message": "rlc reward server is running", "types": sorted(VERIFIERS),
                "network_isolation": isolation()["net_namespace"], "isolation": isolation(),
                "unsafe_code_allowed": config.allow_unsafe_code, "judge": config.judge_url is not None}

    @app.post("/reward")
    async def reward(item: RewardRequest) -> RewardResponse:
        output = assistant_response(item.llm_output)
        vtype, answer = _parse(item.verification_info)
        try:
            score = await VERIFIERS[vtype](output, answer, state["ctx"])
        except BadVerificationInfo as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        except UpstreamError as e:
            raise HTTPException(status_code=502, detail=str(e)) from None
        except Exception as e:  # a verifier bug: logged here, a retryable 500 for the client
            log.exception("%s verifier failed", vtype)
            raise HTTPException(status_code=500, detail=f"{vtype} verifier failed: {type(e).__name__}: {e}") from e
        if config.format_reward:
            score = (1 - WEIGHT) * score + WEIGHT * format_score(output, vtype, answer)
        if config.request_log:
            _log_request(config.request_log, item, vtype, score)
        return RewardResponse(score=score)

    return app


def _parse(raw: str) -> tuple[str, dict[str, Any]]:
    try:
        info = json.loads(raw)
    except json.JSONDecodeError as e:
        raise HTTPException(status_code=422, detail=f"verification_info must be a JSON string: {e}") from None
    if not isinstance(info, dict) or "type" not in info or "answer" not in info:
        raise HTTPException(status_code=422, detail="verification_info must contain 'answer' and 'type' fields. "
                                                    f"Received: {raw[:300]}")
    vtype = info["type"]
    if vtype in UNSUPPORTED:
        raise HTTPException(status_code=422, detail=UNSUPPORTED[vtype])
    if vtype not in VERIFIERS:
        raise HTTPException(status_code=422, detail=f"The verification type {vtype!r} is not supported; this server "
                                                    f"scores {', '.join(sorted(VERIFIERS))}")
    if not isinstance(info["answer"], dict):
        raise HTTPException(status_code=422, detail=f"{vtype}: verification_info.answer must be an object, got "
                                                    f"{type(info['answer']).__name__}")
    return vtype, info["answer"]


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


def _log_request(path: str, item: RewardRequest, vtype: str, score: float) -> None:
    line = json.dumps({"sample": sample_id(item.llm_output, item.verification_info), "type": vtype,
                       "score": score, "pid": os.getpid()}) + "\n"
    # One O_APPEND write per line: lines from several worker processes interleave whole.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
