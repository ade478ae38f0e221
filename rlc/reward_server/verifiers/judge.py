"""`llm_judge`: ask an OpenAI-compatible chat endpoint whether the output agrees with `answer.value`.

rl_verifier's prompt (adapted there from HuatuoGPT-o1) and verdict rule: the judge's reply "True" (any case,
optionally quoted, and, as there, without surrounding whitespace) scores 1.0, anything else 0.0. When the server
was started without a judge URL the request is unscorable (422, saying how to configure one); when the judge is
unreachable or answers badly, the request fails with 502 so that clients retry it instead of recording a wrong 0.
"""

from __future__ import annotations

from typing import Any

import httpx

from rlc.reward_server.verifiers.base import BadVerificationInfo, Context, UpstreamError, require

PROMPT = """\
<Model Response>
{model_response}
</Model Response>

<Reference Answer>
{ground_truth}
</Reference Answer>

You are provided with a model-generated response (<Model Response>) and a reference answer (<Reference Answer>). \
Compare the model response with the reference answer and determine its correctness. Your task is to simply output \
"True" if the response is correct, and "False" otherwise"""


async def llm_judge(output: str, answer: dict[str, Any], ctx: Context) -> float:
    reference = require(answer, "value", (str, int, float), "llm_judge")
    if ctx.judge is None:
        raise BadVerificationInfo("llm_judge is not configured on this server: start it with a judge URL "
                                  "(`rlc reward-server --judge-url http://host:port/v1`)")
    body: dict[str, Any] = {
        "model": await _model(ctx),
        "messages": [{"role": "user", "content": PROMPT.format(model_response=output, ground_truth=reference)}],
        "temperature": ctx.config.judge_temperature,
    }
    if ctx.config.judge_max_tokens is not None:
        body["max_tokens"] = ctx.config.judge_max_tokens
    reply = await _call(ctx.judge, "POST", "chat/completions", json=body)
    try:
        verdict = reply["choices"][0]["message"]["content"]
        return 1.0 if verdict.lower().strip('"') == "true" else 0.0
    except (KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamError(f"the judge at {ctx.judge.base_url} answered without choices[0].message.content: "
                            f"{str(reply)[:200]}") from None


async def _model(ctx: Context) -> str:
    if ctx.judge_model is None:
        listed = await _call(ctx.judge, "GET", "models")
        try:
            ctx.judge_model = listed["data"][0]["id"]
        except (KeyError, IndexError, TypeError):
            raise UpstreamError(f"the judge at {ctx.judge.base_url} lists no models; start the server with a "
                                "judge model name") from None
    return ctx.judge_model


async def _call(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = await client.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as e:
        raise UpstreamError(f"the judge at {client.base_url} failed: {type(e).__name__}: {e}") from None
