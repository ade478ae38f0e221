"""`python -m rlc_runtime RUN_DIR`: train with the config the compiler wrote into RUN_DIR/config.resolved.yaml.

The runtime reads only that file (never the user's YAML) into the same pydantic models the compiler used, so the two
cannot disagree about a key, and places its workers by the topology in RUN_DIR/plan.json. A plan.json that does not
match the config (edited by hand) is refused; a run directory without one (written by a script rather than
`rlc launch`) gets the topology the compiler would have written, from the same `Topology.from_config`.

What can go wrong for a user (a bad config, a model that does not load, a worker that fails) is one message on
stderr and exit status 1; the full traceback, when there is one, goes to RUN_DIR/error.log.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from rlc.config.root import RLCConfig
from rlc.topology import Topology

CONFIG_FILE = "config.resolved.yaml"
PLAN_FILE = "plan.json"


class ConfigError(Exception):
    """The run directory's config cannot be used; the message says what and where."""


def load_run_config(run_dir: Path) -> RLCConfig:
    from pydantic import ValidationError
    from ruamel.yaml import YAML, YAMLError

    from rlc.config.checks import run_checks
    from rlc.config.defaults import fill_defaults
    from rlc.diagnostics import dotted
    from rlc.interpolate import interpolate

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found (write a run directory with `rlc launch` or `rlc render`)")
    try:
        tree = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections")
    tree, problems = interpolate(tree)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(d.format() for d in problems))
    try:
        config = RLCConfig.model_validate(tree)
    except ValidationError as error:
        lines = [f"{dotted(e['loc'])}: {e['msg']}" for e in error.errors()]
        raise ConfigError(f"{path}: invalid config:\n  " + "\n  ".join(lines)) from None
    errors = [d for d in run_checks(config, tree) if d.severity == "error"]
    if errors:
        raise ConfigError(f"{path}: invalid config:\n  " + "\n  ".join(d.format() for d in errors))
    return fill_defaults(config)


def load_run_topology(run_dir: Path, config: RLCConfig) -> Topology:
    import json

    expected = Topology.from_config(config)
    path = run_dir / PLAN_FILE
    if not path.is_file():
        return expected
    try:
        topology = Topology.from_json(json.loads(path.read_text(encoding="utf-8"))["topology"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: no readable topology ({type(error).__name__}: {error}); write the run "
                          "directory again with `rlc launch` or `rlc render`") from None
    if topology != expected:
        raise ConfigError(f"{path}: its topology does not match {CONFIG_FILE} (was one of them edited?); write the "
                          "run directory again with `rlc launch` or `rlc render`")
    return topology


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m rlc_runtime RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0]).resolve()
    try:
        config = load_run_config(run_dir)
        topology = load_run_topology(run_dir, config)
    except ConfigError as error:
        print(f"rlc_runtime: error: {error}", file=sys.stderr)
        return 1
    expected: tuple[type[BaseException], ...] = ()
    try:
        from rlc_runtime.trainer import USER_ERRORS, train

        expected = USER_ERRORS
        train(config, run_dir, topology)
    except KeyboardInterrupt:
        print("rlc_runtime: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place that turns any failure into one message
        return _fail(error, isinstance(error, expected), run_dir)
    return 0


def _fail(error: BaseException, expected: bool, run_dir: Path) -> int:
    details: Any = getattr(error, "details", "") or traceback.format_exc()
    message = str(error) if expected else f"internal error: {type(error).__name__}: {error}"
    log = run_dir / "error.log"
    try:
        log.write_text(f"{message}\n\n{details}", encoding="utf-8")
        message += f"\n(details in {log})"
    except OSError:
        pass
    print(f"rlc_runtime: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
