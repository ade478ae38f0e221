"""Checks that run before any process of a launch starts, each failure one message saying what and how to fix it.

`rlc launch` runs them before it writes or starts anything; `rlc launch --dry-run --preflight` runs them without
starting. What resolve already asked the Hub (repos, revisions and datasets exist, gated access) is not asked
again; what it could not pin is refused here unless `--no-pin`. Everything is cheap and lazy: package presence is
looked up (`importlib.util.find_spec`), never imported, data files are read for their column names only, and a
check that cannot run on this install (no pyarrow to read a parquet header) says so as a note instead of failing.

Checks that belong to the machine the job runs on (the runtime's packages, the GPUs) are made only for the local
executor: a Ray or SLURM job runs elsewhere, and the login node need not have torch. A plan of several nodes needs
its run directory on storage they all see (told by filesystem type, `rlc.mounts`). Inside a SLURM allocation
(`SLURM_JOB_ID` set), a local or Ray launch runs on that allocation, which must hold the plan's nodes and GPUs; an
`--executor slurm` launch asks sbatch for a new allocation of its own, so the current one is not compared.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rlc.diagnostics import Diagnostic
from rlc.plan import LaunchPlan

RUNTIME_PACKAGES = ("torch", "transformers", "ray", "datasets", "safetensors", "math_verify")
LOGGER_PACKAGES = {"wandb": ("wandb", "wandb"), "tensorboard": ("tensorboard", "runtime")}
PING_TIMEOUT_S = 5.0
MAX_JSON_BYTES = 64 << 20  # a .json array is read whole for its first row's keys only below this size


def run_checks(config: Any, plan: LaunchPlan, no_pin: bool = False) -> list[Diagnostic]:
    """Every problem found (errors) and everything that could not be checked here (notes)."""
    checks = [_pins(plan, no_pin), _run_dir(Path(plan.run_dir)), _shared_run_dir(plan), _local_paths(config),
              _data_files(config), _upload_token(config), _wandb_key(config), _reward_server(config)]
    if plan.executor != "slurm":
        checks.append(_slurm_allocation(plan, os.environ))
    if plan.executor == "local":
        checks += [_runtime_packages(config), _logger_packages(config), _gpus(plan)]
    return [d for check in checks for d in check]


def _error(message: str, hint: str | None = None) -> Diagnostic:
    """Messages name the key themselves: a preflight finding is about the world, not a line of the file."""
    return Diagnostic(f"preflight: {message}", hint=hint)


def _warning(message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(f"preflight: {message}", hint=hint, severity="warning")


def _note(message: str) -> Diagnostic:
    return Diagnostic(f"preflight: {message}", severity="note")


def installed(module: str) -> bool:
    """Whether `module` can be imported here, without importing it (nor, for `a.b`, its package `a`, whose
    __init__ may import torch)."""
    top, _, rest = module.partition(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):  # an import hook that refuses it
        return False
    if spec is None or not rest:
        return spec is not None
    inner = rest.replace(".", os.sep)
    return any((Path(folder) / inner).is_dir() or (Path(folder) / f"{inner}.py").is_file()
               for folder in spec.submodule_search_locations or [])


# each check ----------------------------------------------------------------------------------------------------
def _pins(plan: LaunchPlan, no_pin: bool) -> Iterator[Diagnostic]:
    for key, why in plan.unpinned.items():
        if no_pin:
            yield Diagnostic(f"--no-pin: {key} is not pinned; the job loads whatever it finds then ({why})",
                             severity="warning")
        else:
            yield _error(f"{key} could not be pinned to a commit: {why}",
                         hint="run where the Hub can be reached (or with the model in the local Hugging Face "
                              "cache), or pass --no-pin to launch unpinned")


def _run_dir(run_dir: Path) -> Iterator[Diagnostic]:
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    if not existing.is_dir():
        yield _error(f"the run directory {run_dir} cannot be made: {existing} is a file")
        return
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        yield _error(f"the run directory {run_dir} cannot be written: {err.strerror} in {existing}",
                     hint="choose a --run-dir on writable storage")


def _shared_run_dir(plan: LaunchPlan) -> Iterator[Diagnostic]:
    """Every node of a multi-node plan reads the run directory (plan, scripts) and writes into it (checkpoints)."""
    if plan.nnodes < 2:
        return
    from rlc.mounts import filesystem_of, sharing

    mount = filesystem_of(Path(plan.run_dir).absolute())
    if mount is None:
        yield _note(f"the run directory {plan.run_dir} was not checked for storage all {plan.nnodes} nodes see "
                    "(no /proc/self/mountinfo here)")
        return
    kind, others = sharing(mount.fstype), f"the other {plan.nnodes - 1} node(s) of the plan"
    hint = "choose a --run-dir on storage every node mounts (NFS, Lustre, GPFS, BeeGFS, CephFS)"
    where = f"the run directory {plan.run_dir} is on {mount.fstype} (mounted at {mount.point})"
    if kind == "memory":
        yield _error(f"{where}, this machine's memory: {others} cannot see it", hint=hint)
    elif kind == "local":
        yield _warning(f"{where}, a node-local filesystem: {others} will not see it unless the same path is "
                       "shared with them", hint=hint)
    elif kind == "unknown":
        yield _note(f"{where}; rlc cannot tell whether {others} see it")


def _slurm_allocation(plan: LaunchPlan, env: Mapping[str, str]) -> Iterator[Diagnostic]:
    """Inside `salloc`/`sbatch`, the allocation must hold the plan: its node count, and on each node the GPUs."""
    job = env.get("SLURM_JOB_ID")
    if not job:
        return
    nodes = _slurm_count(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES"))
    if nodes is not None and nodes < plan.nnodes:
        yield _error(f"the plan needs {plan.nnodes} node(s), and the SLURM allocation {job} has {nodes} "
                     "(SLURM_JOB_NUM_NODES)", hint=f"allocate {plan.nnodes} nodes (salloc -N {plan.nnodes}) or use "
                     f"--nnodes {nodes}")
    if plan.device != "cuda":
        return
    gpus, variable = _slurm_gpus(env)
    if gpus is None:
        yield _note(f"the GPUs of the SLURM allocation {job} were not checked (none of SLURM_GPUS_ON_NODE, "
                    "SLURM_GPUS_PER_NODE, SLURM_JOB_GPUS is set)")
    elif gpus < plan.gpus_per_node:
        yield _error(f"the plan needs {plan.gpus_per_node} GPUs on each node, and the SLURM allocation {job} has "
                     f"{gpus} per node ({variable})", hint=f"allocate {plan.gpus_per_node} GPUs per node "
                     f"(--gpus-per-node {plan.gpus_per_node}) or use --gpus-per-node {gpus}")


def _slurm_gpus(env: Mapping[str, str]) -> tuple[int | None, str]:
    """GPUs per node of the allocation: SLURM_GPUS_ON_NODE (this node's count), else SLURM_GPUS_PER_NODE
    (`4` or `a100:4`), else the list of GPU ids in SLURM_JOB_GPUS (`0,1,2,3`)."""
    for variable in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        count = _slurm_count((env.get(variable) or "").rpartition(":")[2])
        if count is not None:
            return count, variable
    ids = env.get("SLURM_JOB_GPUS")
    if ids:
        return len([i for i in ids.split(",") if i.strip()]), "SLURM_JOB_GPUS"
    return None, ""


def _slurm_count(text: str | None) -> int | None:
    """SLURM writes counts as plain integers, or with a repetition suffix per node (`4(x2)`) where they differ."""
    found = re.match(r"\s*(\d+)", text or "")
    return int(found.group(1)) if found else None


def _local_paths(config: Any) -> Iterator[Diagnostic]:
    from rlc.config.checks import uses_critic
    from rlc.hub import is_local_path

    model = config.actor_rollout_ref.model
    places = [(("actor_rollout_ref", "model", "path"), model.path),
              (("actor_rollout_ref", "model", "tokenizer_path"), model.tokenizer_path)]
    if uses_critic(config):
        places.append((("critic", "model", "path"), config.critic.model.path))
    if config.reward_model.enable:
        places.append((("reward_model", "model", "path"), config.reward_model.model.path))
    for path, value in places:
        if value and is_local_path(value) and not Path(value).expanduser().exists():
            yield _error(f"{'.'.join(path)}: {value} does not exist",
                         hint="check the path (relative paths are relative to where rlc runs)")
    if config.backend == "megatron":
        yield from _dist_checkpoints(config)
    reward = config.custom_reward_function.path
    if reward and not Path(reward).is_file():
        yield _error(f"custom_reward_function.path: {reward} does not exist")


def _dist_checkpoints(config: Any) -> Iterator[Diagnostic]:
    """A megatron dist checkpoint to start from is a directory with metadata.json (or an rlc/verl checkpoint
    directory that holds one as dist_ckpt/), as the engine reads it."""
    from rlc.config.checks import megatron_roles

    for place, block in megatron_roles(config):
        path = block.use_dist_checkpointing and block.dist_checkpointing_path
        if not path:
            continue
        root = Path(path).expanduser()
        if not any((d / "metadata.json").is_file() for d in (root, root / "dist_ckpt")):
            found = "holds no megatron dist checkpoint (no metadata.json in it or in its dist_ckpt/)" \
                if root.is_dir() else "does not exist"
            yield _error(f"{'.'.join(place)}.megatron.dist_checkpointing_path: {path} {found}",
                         hint="point it at a megatron dist checkpoint (verl's converter output, or a checkpoint "
                              "directory rlc saved), or set use_dist_checkpointing false")


def _data_files(config: Any) -> Iterator[Diagnostic]:
    from rlc.resolve import as_list, dataset_ids

    data = config.data
    hub_ids = set(dataset_ids(data))
    wanted = [data.prompt_key, "messages"]  # the runtime takes chat `messages` when prompt_key is absent
    for key in ("train_files", "val_files"):
        for name in as_list(getattr(data, key)):
            if name in hub_ids:
                yield _note(f"data.{key}: the columns of the Hub dataset {name} are checked when the job loads it")
                continue
            file = Path(name).expanduser()
            if not file.exists():
                yield _error(f"data.{key}: {name} does not exist",
                             hint=f"relative paths are relative to where rlc runs ({Path.cwd()})")
                continue
            columns, why = read_columns(file)
            if columns is None:
                yield _note(f"data.{key}: the columns of {name} were not checked ({why})")
            elif not set(wanted) & set(columns):
                yield _error(f"data.{key}: {name} has no `{data.prompt_key}` column (data.prompt_key) and no "
                             f"`messages`; its columns: {', '.join(columns)}",
                             hint="set data.prompt_key to the column that holds the prompts")


def read_columns(file: Path) -> tuple[list[str] | None, str]:
    """The column names of a data file from its header alone, or None and why not."""
    suffix = file.suffix.lower()
    try:
        if suffix == ".parquet":
            if not installed("pyarrow"):
                return None, "pyarrow is not installed: pip install 'rlc[runtime]'"
            import pyarrow.parquet as pq

            return list(pq.read_schema(file).names), ""
        if suffix == ".jsonl":
            with file.open() as lines:
                first = next((line for line in lines if line.strip()), "{}")
            return list(json.loads(first)), ""
        if suffix == ".json":
            if file.stat().st_size > MAX_JSON_BYTES:
                return None, "a large .json file is read only by the job"
            rows = json.loads(file.read_text())
            first = rows[0] if isinstance(rows, list) and rows else rows
            return (list(first), "") if isinstance(first, dict) else (None, "not a list of objects")
        if suffix == ".csv":
            with file.open(newline="") as handle:
                return next(csv.reader(handle), []), ""
    except (OSError, ValueError, TypeError, UnicodeDecodeError) as err:
        return None, f"unreadable: {err}"
    except Exception as err:  # noqa: BLE001 - pyarrow's own errors (ArrowInvalid) without importing it first
        return None, f"unreadable: {type(err).__name__}: {err}"
    return None, f"a {suffix or 'suffix-less'} file's columns are read only by the job"


def _upload_token(config: Any) -> Iterator[Diagnostic]:
    if not config.hf_upload.enabled:
        return
    from huggingface_hub import get_token

    if not get_token():
        yield _error("hf_upload.enabled needs a Hugging Face token with write access, and none was found",
                     hint="export HF_TOKEN (or run `hf auth login`) before launching")
        return
    from rlc.hub import offline_requested

    if offline_requested():
        yield _note("hf_upload: the token was not checked against the Hub (offline)")
        return
    yield from _check_token()


def _check_token() -> Iterator[Diagnostic]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().whoami()
    except HfHubHTTPError as err:
        status = err.response.status_code if getattr(err, "response", None) is not None else None
        if status == 401:
            yield _error("hf_upload: the Hub refused the Hugging Face token (invalid or expired)",
                         hint="set a valid HF_TOKEN or run `hf auth login`")
        else:
            yield _note(f"hf_upload: the token could not be checked (HTTP {status})")
    except Exception as err:  # noqa: BLE001 - no network: the upload itself retries and never fails the run
        yield _note(f"hf_upload: the token could not be checked ({type(err).__name__})")


def _logger_names(config: Any) -> list[str]:
    logger = config.trainer.logger
    return logger if isinstance(logger, list) else [logger]


def _logger_packages(config: Any) -> Iterator[Diagnostic]:
    for name in _logger_names(config):
        module, extra = LOGGER_PACKAGES.get(name, (None, None))
        if module and not installed(module):
            yield _error(f"trainer.logger has {name}, and {module} is not installed",
                         hint=f"pip install 'rlc[{extra}]', or remove {name} from trainer.logger")


def _wandb_key(config: Any) -> Iterator[Diagnostic]:
    """The job inherits this environment (or the user's stored login), wherever it runs."""
    if "wandb" in _logger_names(config) and not _has_wandb_key():
        yield _error("trainer.logger has wandb, and no W&B API key was found (WANDB_API_KEY, or `wandb login`)",
                     hint="export WANDB_API_KEY, or set WANDB_MODE=offline to log locally")


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled",
                                                                                         "dryrun"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reward_server(config: Any) -> Iterator[Diagnostic]:
    api = config.reward_api
    if not api.enable or not api.api_url:
        return
    url = api.api_url.rstrip("/") + "/ping"
    try:
        with urllib.request.urlopen(url, timeout=PING_TIMEOUT_S) as reply:  # noqa: S310 - http(s) checked by rlc
            if reply.status == 200:
                return
            problem = f"HTTP {reply.status}"
    except urllib.error.HTTPError as err:
        problem = f"HTTP {err.code}"
    except (OSError, ValueError) as err:
        problem = str(getattr(err, "reason", err))
    yield _error(f"the reward server does not answer {url}: {problem}",
                 hint="start it (`rlc reward-server`) or fix reward_api.api_url")


def _runtime_packages(config: Any) -> Iterator[Diagnostic]:
    missing = [name for name in ("rlc_runtime", *RUNTIME_PACKAGES) if not installed(name)]
    if missing:
        yield _error(f"the runtime is not installed in this Python ({', '.join(missing)} missing); this install "
                     "can plan runs but not start them", hint="pip install 'rlc[runtime]'")
    if config.actor_rollout_ref.rollout.name == "vllm" and not installed("vllm"):
        yield _error("actor_rollout_ref.rollout.name is vllm, and vllm is not installed",
                     hint="pip install 'rlc[vllm]' (GPU) or 'rlc[cpu]' (CPU), or use rollout.name: hf")
    if config.backend == "megatron" and not installed("megatron.core"):
        yield _error("backend is megatron, and megatron-core is not installed",
                     hint="pip install 'rlc[megatron]'")


def _gpus(plan: LaunchPlan) -> Iterator[Diagnostic]:
    # (a plan of several nodes under --executor local is refused when it is compiled)
    if plan.device != "cuda":
        return
    have = visible_gpus()
    if have is None:
        yield _error("the plan needs NVIDIA GPUs, and nvidia-smi finds none here",
                     hint="run on a GPU machine, or set trainer.device: cpu")
    elif have < plan.gpus_per_node:
        yield _error(f"the plan needs {plan.gpus_per_node} GPUs on this machine, and {have} are visible",
                     hint=f"use --gpus-per-node {have} or a larger machine")


def visible_gpus() -> int | None:
    """GPUs this process may use: nvidia-smi's list, narrowed by CUDA_VISIBLE_DEVICES; None without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    count = sum(line.startswith("GPU ") for line in listed.splitlines())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return count or None
