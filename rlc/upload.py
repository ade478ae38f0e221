"""Push a checkpoint folder to the Hugging Face Hub (seed 001), with retries, a model card, and no secrets.

A failed upload never loses the checkpoint: the folder on disk is only read. Transient failures (5xx, 429,
timeouts, a connection cut mid-transfer) are retried with exponential backoff; authentication and permission errors
are not, since retrying cannot fix them, and neither is an offline Hub (HF_HUB_OFFLINE, connection refused, a name
that does not resolve): it is reported at once rather than after minutes of backoff. The token is whatever
huggingface_hub finds (HF_TOKEN, the stored login) and is never logged. The model card's metadata comes from a YAML
emitter and its config is redacted (rlc.secrets). A re-run after an interrupted upload re-sends only what the Hub
lacks: large files are content-addressed, and the client skips objects the server already holds.
"""

from __future__ import annotations

import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_CARD_BODY = """
# {repo_id}

Trained with [rlc](https://github.com/rlc-project/rlc) ({algorithm}) from `{base_model}`
at revision `{revision}`{step_text}.

| | |
|---|---|
| base model | `{base_model}` |
| base revision (pinned) | `{revision}` |
| dataset | {dataset} |
| algorithm | {algorithm} |
| optimizer state | {optimizer} |

## Resolved config

Environment references such as `${{oc.env:HF_TOKEN}}` are shown as written; credentials are redacted.

{config}
"""


LORA_ADAPTER = "lora_adapter"  # a LoRA policy's adapter inside a checkpoint's actor/ (verl's name)
ADAPTER_CONFIG = "adapter_config.json"
OFFLINE_MESSAGE = ("upload to {repo_id}: huggingface_hub is offline (HF_HUB_OFFLINE is set); unset it and "
                   "retry with `rlc upload`")


class UploadError(Exception):
    """An upload that did not happen; the message says why and what to do."""


@dataclass(frozen=True)
class UploadTarget:
    repo_id: str
    private: bool = False

    @staticmethod
    def of(repo_id: str, organization: str | None = None, private: bool = False) -> UploadTarget:
        """`organization` prefixes a bare repo name, as seed 001's example 3 does."""
        name = f"{organization}/{repo_id}" if organization and "/" not in repo_id else repo_id
        return UploadTarget(name, private)


def model_card(repo_id: str, base_model: str, revision: str | None, dataset: str, algorithm: str,
               config: dict[str, Any] | None, optimizer: bool, step: int | None = None, adapter: bool = False) -> str:
    """README.md for the Hub. The metadata block is emitted by huggingface_hub's YAML dumper and every value in
    the body is flattened to one line, so no value (a newline in `base_model`) can add lines of its own; the config
    is redacted (rlc.secrets)."""
    from huggingface_hub import ModelCardData

    from rlc.resolve import dump_yaml
    from rlc.secrets import redact

    metadata = ModelCardData(library_name="peft" if adapter else "transformers",  # a LoRA adapter: peft loads it
                             tags=["rlc", "reinforcement-learning", algorithm],
                             base_model=base_model if _is_repo_id(base_model) else None)
    config_yaml = dump_yaml(redact(config)) if config is not None else "# not available\n"
    body = MODEL_CARD_BODY.format(
        repo_id=_inline(repo_id), base_model=_inline(base_model), revision=_inline(revision or "unpinned"),
        dataset=_inline(dataset), algorithm=_inline(algorithm), config=_fenced(config_yaml),
        optimizer="included (`optimizer.pt`)" if optimizer else "not included",
        step_text=f", step {step}" if step is not None else "")
    return f"---\n{metadata.to_yaml()}\n---\n{body}"


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return "/" in name and not name.startswith((".", "/"))


def _inline(value: object) -> str:
    """One line of Markdown: control characters become spaces, backticks are dropped (they would end a code span
    and let the rest of the value be read as Markdown) and `|` is escaped (it would split a table cell)."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", str(value)).replace("`", "").replace("|", "\\|")


def _fenced(text: str) -> str:
    """A Markdown code block that no run of backticks inside `text` can close early."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}yaml\n{text}{fence}"


def upload_folder(folder: Path, target: UploadTarget, *, include_optimizer: bool, max_retries: int = 3,
                  commit_message: str = "Upload from rlc", backoff_s: float = 2.0) -> str:
    """Create the repo if needed and upload `folder`; returns the commit URL. Raises UploadError."""
    from huggingface_hub import HfApi

    from rlc.hub import offline_requested

    folder = Path(folder)
    if offline_requested():
        raise UploadError(OFFLINE_MESSAGE.format(repo_id=target.repo_id))
    if not (folder / "config.json").exists() and not (folder / ADAPTER_CONFIG).exists():
        raise UploadError(f"{folder} is neither a Hugging Face model folder nor a PEFT adapter (no config.json, "
                          f"no {ADAPTER_CONFIG})")
    api = HfApi()
    ignore = ["*.partial", ".cache/*"] + ([] if include_optimizer else ["optimizer.pt"])

    def attempt() -> str:
        api.create_repo(target.repo_id, private=target.private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=target.repo_id, repo_type="model",
                                 commit_message=commit_message, ignore_patterns=ignore)
        return str(getattr(info, "commit_url", info))

    return with_retries(attempt, target.repo_id, max_retries, backoff_s)


def with_retries(action, repo_id: str, max_retries: int, backoff_s: float) -> str:  # noqa: ANN001
    for attempt in range(max_retries + 1):
        try:
            return action()
        except Exception as err:  # classified below; anything unknown is reported, not retried
            transient = _is_transient(err)
            if not transient or attempt == max_retries:
                raise UploadError(_explain(err, repo_id, attempt + 1)) from None
            delay = backoff_s * 2**attempt * (0.5 + random.random())
            print(f"rlc: upload to {repo_id} failed ({_short(err)}); retrying in {delay:.1f} s", file=sys.stderr)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _is_transient(err: Exception) -> bool:
    """5xx, 429, timeouts and connections cut mid-transfer may pass; an offline or unreachable Hub will not."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else 0
        return status >= 500 or status in (408, 429)
    if _offline(err) or _unreachable(err):
        return False
    return isinstance(err, (ConnectionError, TimeoutError)) or type(err).__name__ in (
        "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "RemoteProtocolError", "ReadError",
        "WriteError")


def _offline(err: BaseException) -> bool:
    from huggingface_hub.errors import OfflineModeIsEnabled

    return isinstance(err, OfflineModeIsEnabled)


def _unreachable(err: BaseException) -> bool:
    """Connection refused or a name that does not resolve (httpx reports both as ConnectError), anywhere in the
    chain of causes."""
    import socket

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (ConnectionRefusedError, socket.gaierror)) or type(seen).__name__ == "ConnectError":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _explain(err: Exception, repo_id: str, attempts: int) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    status = err.response.status_code if isinstance(err, HfHubHTTPError) and err.response is not None else None
    if _offline(err):
        return OFFLINE_MESSAGE.format(repo_id=repo_id)
    if _unreachable(err):
        return (f"upload to {repo_id}: the Hub at {constants.ENDPOINT} cannot be reached ({_short(err)}); "
                "check the network (or HF_ENDPOINT), then retry with `rlc upload`")
    if status == 401:
        return f"upload to {repo_id}: not authenticated; set HF_TOKEN or run `hf auth login`"
    if status == 403:
        return f"upload to {repo_id}: the token may not write to this repo (permission denied)"
    if status in (400, 422) or isinstance(err, ValueError):
        return f"upload to {repo_id}: the Hub refused it ({_short(err)}); is the repo name valid?"
    return f"upload to {repo_id} failed after {attempts} attempt(s): {_short(err)}"


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def prepare_folder(checkpoint: Path, base_model: str | None, include_optimizer: bool) -> Path:
    """An uploadable HF folder for any checkpoint rlc knows: an HF folder as is, else verl/rlc shards
    consolidated into `<checkpoint>/huggingface_consolidated` (the shards are left untouched)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise UploadError(f"{checkpoint} is not a directory")
    if (checkpoint / "actor").is_dir():
        checkpoint = checkpoint / "actor"
    if (checkpoint / "config.json").exists() and any(checkpoint.glob("*.safetensors")):
        return checkpoint
    if (checkpoint / LORA_ADAPTER / ADAPTER_CONFIG).exists():  # a LoRA policy: its adapter, in PEFT's format
        return checkpoint / LORA_ADAPTER
    if not any(checkpoint.glob("model_world_size_*_rank_*.pt")):
        raise UploadError(f"{checkpoint} holds neither a Hugging Face model (config.json + *.safetensors) nor "
                          "sharded model_world_size_N_rank_K.pt files")
    return _consolidate(checkpoint, checkpoint / "huggingface_consolidated", base_model, include_optimizer)


def _consolidate(checkpoint: Path, out: Path, base_model: str | None, include_optimizer: bool) -> Path:
    """The runtime's consolidation (it needs torch), run as its own program: the compiler never imports the
    runtime, as `rlc launch` never does either."""
    import subprocess

    command = [sys.executable, "-m", "rlc_runtime.export", str(checkpoint), str(out)]
    command += ["--base-model", base_model] if base_model else []
    command += ["--with-optimizer"] if include_optimizer else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return out
    if "No module named" in done.stderr and ("rlc_runtime" in done.stderr or "torch" in done.stderr):
        raise UploadError("consolidating shards needs the runtime (torch): pip install 'rlc[runtime]'")
    lines = done.stderr.strip().splitlines()
    raise UploadError(lines[-1].removeprefix("rlc_runtime.export: error: ") if lines else
                      f"consolidating {checkpoint} failed (exit status {done.returncode})")


def card_for(folder: Path, repo_id: str, base_model: str | None, include_optimizer: bool) -> str:
    """A model card from the run's resolved config when the checkpoint sits in an rlc run directory."""
    resolved = next((p / "config.resolved.yaml" for p in [folder, *folder.parents]
                     if (p / "config.resolved.yaml").exists()), None)
    adapter = (folder / ADAPTER_CONFIG).exists()
    if resolved is None:
        return model_card(repo_id, base_model or "unknown", None, "unknown", "unknown", None, include_optimizer,
                          adapter=adapter)
    from ruamel.yaml import YAML

    config = YAML(typ="safe").load(resolved.read_text(encoding="utf-8"))
    model = config["actor_rollout_ref"]["model"]
    return model_card(repo_id, base_model or model["path"], model.get("revision"), str(config["data"]["train_files"]),
                      config["algorithm"]["adv_estimator"], config, include_optimizer, adapter=adapter)
