"""Push a checkpoint folder to the Hugging Face Hub (seed 001), with retries, a model card, and no secrets.

A failed upload never loses the checkpoint: the folder on disk is only read. Transient failures (connection
errors, 5xx, 429) are retried with exponential backoff; authentication and permission errors are not, since
retrying cannot fix them. The token is whatever huggingface_hub finds (HF_TOKEN, the stored login) and is never
logged. A re-run after an interrupted upload re-sends only what the Hub lacks: large files are content-addressed,
and the client skips objects the server already holds.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MODEL_CARD = """---
library_name: transformers
tags: [rlc, reinforcement-learning, {algorithm}]
{base_model_line}---

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

```yaml
{config}```
"""


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
               config_yaml: str, optimizer: bool, step: int | None = None) -> str:
    base_line = f"base_model: {base_model}\n" if "/" in base_model and not base_model.startswith("/") else ""
    return MODEL_CARD.format(repo_id=repo_id, base_model=base_model, revision=revision or "unpinned",
                             dataset=dataset, algorithm=algorithm, config=config_yaml,
                             optimizer="included (`optimizer.pt`)" if optimizer else "not included",
                             base_model_line=base_line, step_text=f", step {step}" if step is not None else "")


def upload_folder(folder: Path, target: UploadTarget, *, include_optimizer: bool, max_retries: int = 3,
                  commit_message: str = "Upload from rlc", backoff_s: float = 2.0) -> str:
    """Create the repo if needed and upload `folder`; returns the commit URL. Raises UploadError."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise UploadError(f"{folder} is not a Hugging Face model folder (no config.json)")
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
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else 0
        return status >= 500 or status == 429
    return isinstance(err, (ConnectionError, TimeoutError)) or type(err).__name__ in (
        "ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError", "ReadError", "WriteError")


def _explain(err: Exception, repo_id: str, attempts: int) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    status = err.response.status_code if isinstance(err, HfHubHTTPError) and err.response is not None else None
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
    if resolved is None:
        return model_card(repo_id, base_model or "unknown", None, "unknown", "unknown", "# not available\n",
                          include_optimizer)
    from ruamel.yaml import YAML

    text = resolved.read_text()
    config = YAML(typ="safe").load(text)
    model = config["actor_rollout_ref"]["model"]
    return model_card(repo_id, base_model or model["path"], model.get("revision"), str(config["data"]["train_files"]),
                      config["algorithm"]["adv_estimator"], text, include_optimizer)
