"""Initial weights from a megatron dist checkpoint (verl's `megatron.use_dist_checkpointing` and
`dist_checkpointing_path`), in place of converting the Hugging Face weights at model.path.

As verl's `load_mcore_dist_weights`: only the model's tensors are read (under `dist_checkpointing_prefix`), so a
checkpoint that also holds an optimizer and trainer state (rlc's and verl's own training checkpoints) serves as
well as a converted model; megatron reshards them to this run's tensor and pipeline sizes. A critic keeps the value
head it was built with (verl drops `output_layer` for value models too): a converted language model has a
vocabulary head there.

The path may be the dist checkpoint itself (the directory with `metadata.json`, verl's converter's output) or a
checkpoint directory of rlc or verl that holds it as `dist_ckpt/` (`.../global_step_N/actor`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.serialization import StrictHandling

_OUTPUT = "output_layer"


def dist_checkpoint_dir(path: str | Path) -> Path:
    """The directory of the dist checkpoint at `path`, or a clear error."""
    root = Path(path).expanduser()
    for candidate in (root, root / "dist_ckpt"):
        if (candidate / "metadata.json").is_file():
            return candidate
    raise FileNotFoundError(f"dist_checkpointing_path {path} holds no megatron dist checkpoint (no metadata.json "
                            f"in it or in its dist_ckpt/)")


@torch.no_grad()
def load_dist_weights(model: torch.nn.Module, path: str | Path, prefix: str, metadata: dict[str, Any],
                      value_model: bool) -> None:
    """The model's tensors from the dist checkpoint at `path`, loaded in place."""
    state = model.sharded_state_dict(prefix=prefix, metadata=dict(metadata))
    if value_model:
        state = {k: v for k, v in state.items() if _OUTPUT not in k}
    loaded = dist_checkpointing.load(state, str(dist_checkpoint_dir(path)), strict=StrictHandling.ASSUME_OK_UNEXPECTED)
    # the answer also carries the checkpoint's other common state (an optimizer's, a trainer's): only ours is read
    model.load_state_dict({k[len(prefix):]: loaded[k] for k in state}, strict=not value_model)
