"""LoRA runs started as users start them (`rlc launch examples/yaml/lora_plus_one.yaml`), on the learning tests'
task that the tiny model gets wrong (examples/yaml/plus_one.yaml; see test_learning.py for the rise measure).

One uninterrupted run of 10 steps (checkpoints at 8 and 10) must learn with Adam's state for the adapters alone;
a second run resumes from its step-8 checkpoint, must repeat its steps 9 and 10 and end at its adapters, and uploads
the adapter to the loopback Hub, where `PeftModel.from_pretrained` must reproduce the trained policy's log-probs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from e2e_runs import ROOT, read_metrics
from test_learning import rise

pytestmark = pytest.mark.slow
TASK = ROOT / "examples/yaml/lora_plus_one.yaml"
BASE = ROOT / "examples/models/tiny-qwen2"
RANK, ALPHA = 16, 32  # the example's lora_rank and lora_alpha
SHARD = "world_size_1_rank_0.pt"


def launch(run_dir: Path, *overrides: str, offline: bool = True) -> str:
    sets = [arg for key_value in (f"trainer.default_local_dir={run_dir / 'checkpoints'}", *overrides)
            for arg in ("--set", key_value)]
    proc = subprocess.run([sys.executable, "-m", "rlc.cli", "launch", str(TASK), "--run-dir", str(run_dir),
                           *(["--offline"] if offline else []), *sets], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("lora")
    launch(run_dir, "trainer.save_freq=8")
    return run_dir


def base_model() -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(BASE).eval()


def adapter_parameters() -> int:
    """r x (in + out) over every Linear of the plain model but its output layer: what all-linear adapts."""
    return sum(RANK * (m.in_features + m.out_features) for name, m in base_model().named_modules()
               if isinstance(m, torch.nn.Linear) and name != "lm_head")


def load(path: Path) -> dict:
    """One rank's checkpoint file, DTensors as full tensors (world size 1 holds them whole)."""
    import torch.distributed.tensor  # noqa: F401  (registers DTensor for weights-only loading)

    full = {}
    for name, value in torch.load(path, weights_only=True).items():
        full[name] = value.full_tensor() if hasattr(value, "full_tensor") else value
    return full


def test_lora_learns_and_keeps_optimizer_state_for_the_adapters_only(uninterrupted: Path) -> None:
    rows = read_metrics(uninterrupted)
    assert rows[0]["critic/score/mean"] < 0.15  # the habit is wrong: the task is not already solved
    assert rise(rows) >= 0.1, [r["critic/score/mean"] for r in rows]
    assert all(r["rollout/logprob_diff"] < 1e-3 for r in rows)  # the rollout runs the merged adapters
    actor = uninterrupted / "checkpoints" / "global_step_10" / "actor"
    model = load(actor / f"model_{SHARD}")
    adapters = [t for name, t in model.items() if ".lora_" in name]
    assert sum(t.numel() for t in adapters) == adapter_parameters()
    optimizer = load(actor / f"optim_{SHARD}")
    moments = [v.to_local() if hasattr(v, "to_local") else v
               for state in optimizer["state"].values() for k, v in state.items() if k != "step"]
    assert sum(v.numel() * v.element_size() for v in moments) == 2 * 4 * adapter_parameters()
    assert not any((actor.parent.parent / "global_step_10" / name).exists() for name in ("ref", "critic"))


def merged_by_hand(model_state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The base model with each trained adapter folded in as W + alpha / r * B @ A, without peft."""
    model = base_model()
    weights = dict(model.named_parameters())
    with torch.no_grad():
        for name, a in model_state.items():
            if ".lora_A." in name:
                owner = name.split(".lora_A.")[0].removeprefix("base_model.model.")
                b = model_state[name.replace(".lora_A.", ".lora_B.")]
                weights[owner + ".weight"] += ALPHA / RANK * b @ a
    return model


def response_log_probs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids).logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]


def test_resume_repeats_the_run_and_uploads_an_adapter_peft_loads(uninterrupted: Path, tmp_path: Path, hub_server,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import snapshot_download
    from peft import PeftModel

    monkeypatch.setenv("HF_TOKEN", hub_server.add_token("hf_write_token"))
    out = launch(tmp_path, "trainer.resume_mode=resume_path",
                 f"trainer.resume_from_path={uninterrupted / 'checkpoints' / 'global_step_8'}",
                 "hf_upload.enabled=true", "hf_upload.repo_id=tester/tiny-lora", "hf_upload.optimizer_save_mode=full",
                 offline=False)
    assert "resumed from" in out and "(step 8 of 10)" in out
    first, resumed = read_metrics(uninterrupted), read_metrics(tmp_path)
    assert [r["step"] for r in resumed] == [9, 10]
    for step in resumed:  # the same samples and scores as the uninterrupted run's steps 9 and 10
        assert step["critic/score/mean"] == first[step["step"] - 1]["critic/score/mean"]
    trained = load(uninterrupted / "checkpoints" / "global_step_10" / "actor" / f"model_{SHARD}")
    again = load(tmp_path / "checkpoints" / "global_step_10" / "actor" / f"model_{SHARD}")
    for name, tensor in trained.items():
        torch.testing.assert_close(again[name], tensor, atol=1e-5, rtol=0, msg=name)

    files = hub_server.files_at("tester/tiny-lora")
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md", "optimizer.pt"} <= set(
        files)
    assert "library_name: peft" in files["README.md"].decode()
    # Downloaded first: peft asks huggingface_hub's module-level HfApi, whose endpoint was fixed at import, before
    # the test pointed the Hub at the loopback server.
    loaded = PeftModel.from_pretrained(base_model(), snapshot_download("tester/tiny-lora")).eval()
    ids = torch.tensor([[5, 17, 42, 8, 99, 23, 61, 7]])
    expected = response_log_probs(merged_by_hand(again), ids)
    torch.testing.assert_close(response_log_probs(loaded, ids), expected, atol=1e-5, rtol=0)
    assert (expected - response_log_probs(base_model(), ids)).abs().max() > 1e-3  # training moved the policy
