"""Import direction: the compiler (`rlc`) never imports the runtime (`rlc_runtime`) nor torch, ray or vllm, not
even lazily inside a function; the runtime builds on the compiler's models and rules, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RLC = Path(__file__).parents[2] / "rlc"
FORBIDDEN = ("rlc_runtime", "torch", "ray", "vllm", "megatron")


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(RLC.rglob("*.py")), ids=lambda p: str(p.relative_to(RLC)))
def test_the_compiler_never_imports_the_runtime_or_its_heavy_libraries(path: Path) -> None:
    bad = sorted(m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN)
    assert not bad, f"{path} imports {bad}"


def test_the_scan_sees_a_lazy_import(tmp_path: Path) -> None:
    """The check reads imports inside functions too (a lazy `from rlc_runtime ...` was how the rule was broken)."""
    module = tmp_path / "lazy.py"
    module.write_text("import json\n\ndef f():\n    from rlc_runtime.export import consolidate_verl\n")
    assert imported_modules(module) == {"json", "rlc_runtime.export"}


def test_validate_of_a_valid_config_imports_only_what_it_uses() -> None:
    """A cold `rlc validate` is the compiler's most frequent start: jsonschema (imported only to explain a config the
    models refuse), rich (help and tracebacks), jinja2 (rendering) and the Hub client are not part of it."""
    import subprocess
    import sys

    probe = ("import sys\nfrom rlc.cli import app\ntry:\n    app(['validate', sys.argv[1]])\nexcept SystemExit as e:\n"
             "    assert e.code == 0, e.code\n"
             "print(sorted(m for m in ('jsonschema', 'rich', 'jinja2', 'huggingface_hub', 'torch')\n"
             "             if m in sys.modules))")
    example = RLC.parent / "examples" / "yaml" / "grpo_gsm8k.yaml"
    done = subprocess.run([sys.executable, "-c", probe, str(example)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
