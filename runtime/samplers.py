"""A sampler class of the user's (`data.sampler.class_path` / `class_name`), loaded and driven as verl does it.

verl's `create_rl_sampler` loads the class from `pkg://package.module` (imported by name; `pkg://a/b` is `a.b`)
or from a file (`file://path.py` or a plain path), builds it as `cls(data_source=dataset, data_config=data)`,
and its DataLoader cuts one pass over the sampler's indices into batches of `train_batch_size`, the last partial
batch dropped. A curriculum sampler (one with `update`) is called after every training step with that step's
batch. rlc does the same, with two differences a sampler may notice:
- `data_config` is rlc's resolved `data` section as a mapping that also answers attribute access (`cfg.seed`,
  `cfg.get("seed")`, `cfg["seed"]`), where verl passes an OmegaConf DictConfig;
- `update(batch=...)` receives rlc's `TokenBatch` of the step (tensors `input_ids`, `responses`,
  `response_mask`, `token_level_rewards`, `advantages`, ...; `meta["uid"]`, the index in the step's prompts of
  each sample), not verl's DataProto.
`RandomCurriculumSampler` is rlc's implementation of verl's example sampler of the same name (in verl's test
module `tests.utils.dataset.test_create_rl_sampler_on_cpu`, which imports verl; `rlc.config.data.VERL_SAMPLERS`
maps it here): each pass a random permutation of the rows, and an `update` that does nothing. verl's draws from
torch's unseeded generator (it seeds a generator with 1 and does not pass it on); rlc's from `data.seed`
(1 when unset) and the epoch, so a run and its resume draw the same orders.

On resume, the epoch is drawn again from a fresh pass over the sampler and the batches already trained are
skipped (as verl's stateful loader fast-forwards a sampler without `state_dict`). A sampler with `set_epoch`
(the convention of torch's DistributedSampler) is told the epoch before each pass and can draw the same order
again; one whose passes differ otherwise (unseeded randomness) gives a different rest of that epoch.
"""

from __future__ import annotations

import importlib
import importlib.util
import random
import sys
from pathlib import Path
from typing import Any

from rlc_runtime.data import DataError, EpochSampler

PKG, FILE = "pkg://", "file://"


class ConfigView(dict):
    """A mapping whose keys are also attributes, nested: what verl's samplers expect of a DictConfig."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__({k: ConfigView(v) if isinstance(v, dict) else v for k, v in data.items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def load_sampler_class(class_path: str, class_name: str) -> type:
    """verl's `load_extern_object`: the class `class_name` of the module at `class_path`."""
    if class_path.startswith(PKG):
        name = class_path[len(PKG):].replace("/", ".")
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            raise DataError(f"data.sampler.class_path: cannot import {name}: {err}") from err
    else:
        file = Path(class_path.removeprefix(FILE))
        if not file.is_file():
            raise DataError(f"data.sampler.class_path: {file} does not exist")
        spec = importlib.util.spec_from_file_location(f"rlc_user_sampler_{abs(hash(str(file.resolve())))}", file)
        if spec is None or spec.loader is None:
            raise DataError(f"data.sampler.class_path: cannot load {file} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # pickling (a checkpoint, a Ray call) finds its classes again
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's module: its error, said in one line
            raise DataError(f"data.sampler.class_path: loading {file} failed: {type(err).__name__}: {err}") from err
    found = getattr(module, class_name, None)
    if not isinstance(found, type):
        raise DataError(f"data.sampler.class_name: {class_path} has no class {class_name!r}")
    return found


class UserSampler(EpochSampler):
    """Batches of `batch_size` indices from passes over the user's sampler, one pass per epoch."""

    def __init__(self, sampler: Any, rows: int, batch_size: int) -> None:
        super().__init__(len(sampler), batch_size, shuffle=False)  # n: the indices of one pass (verl's len)
        self.user, self.rows = sampler, rows

    @classmethod
    def build(cls, data: Any, dataset: Any) -> UserSampler:
        sampler_class = load_sampler_class(data.sampler.class_path, data.sampler.class_name)
        try:
            sampler = sampler_class(data_source=dataset, data_config=ConfigView(data.model_dump()))
            size = len(sampler)
        except Exception as err:  # noqa: BLE001 - the user's class: its error, said in one line
            raise DataError(f"the sampler {sampler_class.__name__}(data_source, data_config) failed: "
                            f"{type(err).__name__}: {err}") from err
        if size < data.train_batch_size:
            raise DataError(f"the sampler {sampler_class.__name__} gives {size} indices per pass, fewer than "
                            f"data.train_batch_size {data.train_batch_size}")
        return cls(sampler, len(dataset), data.train_batch_size)

    def order(self, epoch: int) -> list[int]:
        if callable(getattr(self.user, "set_epoch", None)):
            self.user.set_epoch(epoch)
        indices = [int(i) for i in iter(self.user)]
        if any(not 0 <= i < self.rows for i in indices):
            bad = next(i for i in indices if not 0 <= i < self.rows)
            raise DataError(f"the sampler {type(self.user).__name__} gave index {bad}, outside the {self.rows} "
                            f"training rows")
        return indices

    def update(self, batch: Any) -> None:
        """A curriculum sampler's view of the step just trained."""
        update = getattr(self.user, "update", None)
        if callable(update):
            update(batch=batch)


class RandomCurriculumSampler:
    """verl's example curriculum sampler: a fresh random order of the rows each pass; `update` does nothing."""

    def __init__(self, data_source: Any, data_config: Any) -> None:
        seed = data_config.get("seed")
        self.rows, self.seed, self.epoch = len(data_source), 1 if seed is None else seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        order = list(range(self.rows))
        random.Random(f"rlc-curriculum:{self.seed}:{self.epoch}").shuffle(order)
        return iter(order)

    def __len__(self) -> int:
        return self.rows

    def update(self, batch: Any) -> None:
        return None
