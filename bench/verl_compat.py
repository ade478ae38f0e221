"""How much of verl's own example scripts rlc takes unchanged: `rlc convert --from-file`, then `rlc validate`.

Every `*.sh` under DIR that runs verl's trainer (`verl.trainer.main_ppo`, a recipe's `main_*`, or
`main_generation`) is converted and validated through the real CLI (in process, so an uncaught exception is counted
as an internal error rather than lost in a subprocess). The table counts scripts converted, configs valid with no
message, valid with warnings only, errors by kind, and internal errors.

Values are checked against bash itself: each script runs under `bash` with a stub `python3`/`python`/`torchrun`/
`ray`/... first on PATH that writes its argv as JSON and does nothing else; every other command the script names
is neither on PATH nor run (`command_not_found_handle` returns 0), except a few path and text helpers. Each
`key=value` bash passed to verl, parsed by Hydra's own override parser, must equal the converted YAML's value once
the YAML's `${oc.env:...}` references are resolved in the environment bash ran with.

    python bench/verl_compat.py DIR [--cwd VERL_CHECKOUT] [--show-failures]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

ENTRY = re.compile(r"verl\.trainer\.main_\w+|recipe(\.\w+)+\.main_\w+|(^|/)main_ppo\.py$|verl\.trainer\.main_ppo")
STUBBED = ("python", "python3", "torchrun", "ray", "nvidia-smi", "srun", "scontrol", "conda", "pip", "huggingface-cli",
           "hf", "wandb", "sbatch", "deepspeed", "accelerate", "verl")
HELPERS = ("dirname", "basename", "realpath", "readlink", "date", "pwd", "cat", "awk", "sed", "grep", "cut", "tr",
           "head", "tail", "wc", "seq", "expr", "echo", "printf", "true", "false", "hostname", "nproc", "sort", "env")
STUB = """#!{python}
import json, os, sys
with open(os.environ["RLC_ARGV_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""
NOT_FOUND = "command_not_found_handle() { return 0; }\n"


def scripts(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.sh") if ENTRY.search(p.read_text(errors="replace")))


def make_sandbox(work: Path) -> dict[str, str]:
    """A PATH of stubs and harmless helpers, and the environment bash runs with (HOME inside `work`)."""
    bin_dir = work / "bin"
    bin_dir.mkdir()
    for name in STUBBED:
        (bin_dir / name).write_text(STUB.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    for name in HELPERS:
        if found := shutil.which(name):
            (bin_dir / name).symlink_to(found)
    (work / "bash_env").write_text(NOT_FOUND)
    (work / "home").mkdir()
    return {"PATH": str(bin_dir), "HOME": str(work / "home"), "BASH_ENV": str(work / "bash_env"),
            "RLC_ARGV_LOG": str(work / "argv.jsonl"), "LANG": "C.UTF-8"}


def bash_argv(script: Path, env: dict[str, str], cwd: Path) -> list[str] | str:
    """The arguments bash passes after verl's entry point, or why the script never reached it."""
    log = Path(env["RLC_ARGV_LOG"])
    log.unlink(missing_ok=True)
    try:
        done = subprocess.run(["/bin/bash", str(script)], env=env, cwd=cwd, timeout=20, capture_output=True)
    except subprocess.TimeoutExpired:
        return "bash ran past 20 s"
    for line in log.read_text().splitlines() if log.exists() else []:
        argv = json.loads(line)
        for index, word in enumerate(argv):
            if ENTRY.search(word):
                return argv[index + 1:]
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return f"bash stopped before verl's entry point ({lines[-1] if lines else 'no message'})"


class HydraRefused(str):
    """A word bash passes that Hydra's own parser rejects: verl would stop there too."""


def hydra_values(argv: list[str]) -> dict[str, Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rlc.convert import renamed

    parser, values = OverridesParser.create(), {}
    for word in argv:
        if word.startswith(("-", "~")) or "=" not in word:
            continue
        try:
            override = parser.parse_override(word)
        except Exception as err:  # noqa: BLE001 - Hydra's parser raises several kinds; verl would fail alike
            values[word.split("=", 1)[0].lstrip("+")] = HydraRefused(f"Hydra refuses `{word}`: {err}")
            continue
        key = renamed([override.key_or_group + "=x"])[0][0].rsplit("=", 1)[0]
        values[key] = override.value()
    return values


def yaml_value(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return KeyError(key)
        node = node[part]
    return node


def same(bash: Any, ours: Any) -> bool:
    if isinstance(bash, dict) and isinstance(ours, dict):
        return bash.keys() == ours.keys() and all(same(bash[k], ours[k]) for k in bash)
    if isinstance(bash, list) and isinstance(ours, list):
        return len(bash) == len(ours) and all(same(a, b) for a, b in zip(bash, ours, strict=True))
    if isinstance(bash, bool) or isinstance(ours, bool):
        return bash == ours or str(bash).lower() == str(ours).lower()
    if isinstance(bash, int | float) and isinstance(ours, int | float):
        return float(bash) == float(ours)
    return str(bash) == str(ours)


def interpolated(tree: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The YAML's references resolved as `rlc launch` would in bash's environment."""
    from rlc.interpolate import interpolate

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return interpolate(tree, complete=False)[0]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def kind(message: str) -> str:
    """A message without its particulars, so that messages of one kind are counted together."""
    text = re.sub(r"^.*?(error|warning): ", "", message.strip())
    text = re.sub(r"^[\w.\[\]]+: ", "", text)  # the key
    text = re.sub(r"`[^`]*`|'[^']*'|\"[^\"]*\"|\d+", "…", text)
    return text[:70]


def convert(runner: CliRunner, script: Path, out: Path, allow_unknown: bool) -> tuple[str, str]:
    """("ok" | "error" | "internal", output)."""
    args = ["convert", "--from-file", str(script), "-o", str(out)] + (["--allow-unknown"] if allow_unknown else [])
    from rlc.cli import app

    result = runner.invoke(app, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        return "internal", f"{type(result.exception).__name__}: {result.exception}"
    return ("ok" if result.exit_code == 0 else "error"), result.output


def validate(runner: CliRunner, config: Path) -> tuple[str, list[dict[str, Any]]]:
    from rlc.cli import app

    result = runner.invoke(app, ["validate", "--format", "json", str(config)])
    if result.exception and not isinstance(result.exception, SystemExit):
        return "internal", [{"message": f"{type(result.exception).__name__}: {result.exception}"}]
    text = result.stdout.strip()
    found = json.loads(text) if text.startswith("[") else []
    return ("ok" if result.exit_code == 0 else "error"), found


def run(root: Path, show: bool, cwd: Path | None) -> int:
    runner = CliRunner()
    counts: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    mismatches: list[str] = []
    blocking: collections.Counter[str] = collections.Counter()  # a key rlc knows and refuses -> scripts it stops
    found = scripts(root)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = make_sandbox(work)
        if cwd is None:
            cwd = work / "cwd"
            cwd.mkdir()
        previous = Path.cwd()
        os.chdir(cwd)  # `$(pwd)` is this folder for both bash and rlc
        try:
            for script in found:
                name = script.relative_to(root)
                out = work / "out.yaml"
                status, output = convert(runner, script, out, allow_unknown=False)
                if status == "internal":
                    counts["internal error"] += 1
                    errors[f"internal: {output[:60]}"] += 1
                    print(f"INTERNAL {name}: {output}", file=sys.stderr)
                    continue
                if status == "error":
                    messages = [line for line in output.splitlines() if "error:" in line]
                    for line in messages:
                        errors[f"convert: {kind(line)}"] += 1
                    only_keys = all("unknown key" in line for line in messages)
                    counts["convert refused: unknown keys only" if only_keys else
                           "convert refused: the script itself (shell, entry point)"] += 1
                    if show:
                        print(f"--- {name}\n{output}", file=sys.stderr)
                    status, _ = convert(runner, script, out, allow_unknown=True)
                    counts["converted with --allow-unknown" if status == "ok" else "refused"] += 1
                else:
                    counts["converted"] += 1
                    verdict, diagnostics = validate(runner, out)
                    if verdict == "internal":
                        counts["internal error"] += 1
                    elif verdict == "ok" and not diagnostics:
                        counts["validated clean"] += 1
                    elif verdict == "ok":
                        counts["valid, warnings only"] += 1
                    else:
                        counts["validate errors"] += 1
                        if show:
                            print(f"--- {name}\n{json.dumps(diagnostics, indent=1)}", file=sys.stderr)
                    for d in diagnostics:
                        if d.get("severity", "error") == "error":
                            errors[f"validate: {d.get('code') or kind(d['message'])}"] += 1
                    refused = {re.sub(r"\[\d+\]", "", d["path"]) for d in diagnostics
                               if d.get("severity", "error") == "error" and d.get("code") == "not-implemented"}
                    blocking.update(refused)
                if status == "ok":
                    found_here = compare(script, name, out, env, cwd)
                    mismatches += found_here
                    counts["values compared with bash"] += not any(m.startswith("(not compared)") for m in found_here)
        finally:
            os.chdir(previous)
    report(len(found), counts, errors, mismatches, blocking)
    return 0


def compare(script: Path, name: Path, out: Path, env: dict[str, str], cwd: Path) -> list[str]:
    """Differences between bash's argv and the YAML, run twice: with the environment's variables unset (the
    script's defaults) and with every variable the YAML reads set (the references name the right variables)."""
    text = out.read_text()
    names = sorted(set(re.findall(r"\$\{oc\.env:(\w+)", text)) - set(env))
    problems = _compare_once(script, name, text, env, cwd)
    if names:
        outside = _compare_once(script, name, text, {**env, **{n: f"/from-env/{n}" for n in names}}, cwd)
        if not any(p.startswith("(not compared)") for p in outside):  # `set -u` scripts run only this way
            problems = [p for p in problems if not p.startswith("(not compared)")]
        problems += [f"{p} (with {', '.join(names)} set)" for p in outside if not p.startswith("(not")]
    return problems


def _compare_once(script: Path, name: Path, text: str, env: dict[str, str], cwd: Path) -> list[str]:
    from ruamel.yaml import YAML

    argv = bash_argv(script, env, cwd)
    if isinstance(argv, str):
        return [f"(not compared) {name}: {argv}"]
    # A variable the script reads but never sets: bash passes "", rlc asks for it at launch (an error if unset).
    unset = sorted({n for n in re.findall(r"\$\{oc\.env:(\w+)\}", text) if n not in env})
    tree = interpolated(YAML(typ="safe").load(text) or {}, {**env, **dict.fromkeys(unset, "")})
    problems = []
    for key, value in hydra_values(argv).items():
        if isinstance(value, HydraRefused):
            problems.append(f"{name}: {value}")
            continue
        ours = yaml_value(tree, key)
        if not same(value, ours):
            problems.append(f"{name}: {key}: bash passes {value!r}, the YAML has {ours!r}")
    if unset:
        problems.append(f"(not a difference) {name}: reads {', '.join(unset)}, which it never sets and the bench "
                        "environment does not have: bash passes \"\", rlc requires them at launch")
    return problems


def report(total: int, counts: collections.Counter[str], errors: collections.Counter[str],
           mismatches: list[str], blocking: collections.Counter[str]) -> None:
    def row(label: str, count: int) -> None:
        print(f"| {label:<70} | {count:>5} | {100 * count / max(total, 1):5.1f}% |")

    print(f"| {'scripts that run verl':<70} | {total:>5} | 100.0% |")
    for label in ("converted", "validated clean", "valid, warnings only", "validate errors", "internal error",
                  "convert refused: unknown keys only", "convert refused: the script itself (shell, entry point)"):
        row(label, counts[label])
    row("converted and valid (clean or warnings only)", counts["validated clean"] + counts["valid, warnings only"])
    row("the shell read (converted, or converted with --allow-unknown)",
        counts["converted"] + counts["converted with --allow-unknown"])
    print("\nerrors by kind (messages, not scripts):")
    for label, count in errors.most_common():
        print(f"  {count:>4}  {label}")
    print("\nkeys known to rlc but not implemented, by the scripts whose validation they stop:")
    for key, count in blocking.most_common():
        print(f"  {count:>4}  {key}")
    unequal = [m for m in mismatches if not m.startswith("(not")]
    print(f"\nscripts whose every value was compared with what bash passes: {counts['values compared with bash']}")
    print(f"values unequal to what bash passes: {len(unequal)}")
    for line in sorted(mismatches, key=lambda m: m.startswith("(not")):
        print(f"  {line}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--show-failures", action="store_true")
    parser.add_argument("--cwd", type=Path, help="Run the scripts from here, as their users do (verl's checkout: "
                        "scripts find their configs under $(pwd)/examples); default: an empty temporary folder")
    options = parser.parse_args()
    sys.exit(run(options.dir.resolve(), options.show_failures, options.cwd.resolve() if options.cwd else None))
