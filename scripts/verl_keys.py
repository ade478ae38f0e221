"""Print every key path of verl's generated trainer configs, one per line (the list tests/rlc/config checks).

    git --git-dir=VERL.git show REF:verl/trainer/config/_generated_ppo_trainer.yaml > fsdp.yaml
    git --git-dir=VERL.git show REF:verl/trainer/config/_generated_ppo_megatron_trainer.yaml > megatron.yaml
    python scripts/verl_keys.py fsdp.yaml megatron.yaml > tests/rlc/config/verl_keys.txt

`_target_` keys are left out: they name verl's dataclasses and the loader drops them. A non-empty mapping is a
section (its keys are listed, not itself); an empty one or any other value is a key.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import yaml


def key_paths(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        if key == "_target_":
            continue
        if isinstance(value, dict) and value:
            yield from key_paths(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def main(files: list[str]) -> None:
    seen: dict[str, None] = {}
    for name in files:
        with open(name) as f:
            seen.update(dict.fromkeys(key_paths(yaml.safe_load(f))))
    sys.stdout.write("".join(f"{key}\n" for key in seen))


if __name__ == "__main__":
    main(sys.argv[1:])
