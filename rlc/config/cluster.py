"""`slurm` and `ray_cluster`: where a multi-node run starts, for `--executor slurm` and `--executor ray`.

Neither section exists in verl (verl leaves the cluster to the user's own scripts). Every value here reaches an
`#SBATCH` line, an `srun` or `ray start` argument, so the renderer quotes each as its reader tokenises it; secrets
never appear here: `ray_cluster.pass_env` names environment variables, whose values travel with the job at submit
time and are never written down.
"""

import re
from typing import Literal

from pydantic import Field, field_validator

from rlc.config.base import Section

SBATCH_OPTION = re.compile(r"--?[A-Za-z][A-Za-z0-9-]*(=.*)?")


class Slurm(Section):
    """rlc: sbatch options for `--executor slurm`."""

    partition: str | None = None
    """Partition to submit to (`#SBATCH --partition`)."""
    account: str | None = None
    """Account charged for the job (`#SBATCH --account`)."""
    time: str | None = None
    """Wall-clock limit, in any format sbatch reads (`4:00:00`, `2-00:00:00`)."""
    qos: str | None = None
    """Quality of service (`#SBATCH --qos`)."""
    constraint: str | None = None
    """Node features required (`#SBATCH --constraint`, e.g. `h100`)."""
    gres: str | None = None
    """Generic resources per node (`#SBATCH --gres`, e.g. `gpu:8`); when set it replaces `--gpus-per-node`."""
    container_image: str | None = None
    """Run the Ray nodes and the driver in this container image through pyxis/enroot (`srun --container-image`);
    the image needs rlc's runtime installed, and the run directory is mounted at its own path."""
    container_mounts: list[str] = []
    """More `SRC:DST[:FLAGS]` mounts for the container (`srun --container-mounts`)."""
    container_python: str = "python3"
    """The Python inside the container that runs the driver."""
    extra_sbatch: list[str] = []
    """More `#SBATCH` options, one `--name=value` each (e.g. `--mem=0`, `--mail-type=END`)."""
    template: str | None = None
    """A Jinja2 template of your own to render instead of rlc's sbatch.sh (it sees `plan`, `slurm`, `python`)."""

    @field_validator("extra_sbatch")
    @classmethod
    def _one_option_each(cls, lines: list[str]) -> list[str]:
        for line in lines:
            if not SBATCH_OPTION.fullmatch(line):
                raise ValueError(f"{line!r} is not one sbatch option: write `--name=value` (with `=`, no space), "
                                 "one option per list item")
        return lines


class RayCluster(Section):
    """rlc: the Ray cluster that `--executor ray` and `--executor slurm` start with the rendered scripts."""

    port: int = Field(6379, gt=0, lt=65536)
    """The head's GCS port (`ray start --port`)."""
    dashboard_host: str | None = None
    """Address the head's dashboard and job API listen on (`ray start --dashboard-host`); default: the head node's
    own address, so the cluster network can submit jobs. `127.0.0.1` keeps it on the head; `0.0.0.0` opens it on
    every interface."""
    dashboard_port: int = Field(8265, gt=0, lt=65536)
    """Port of the dashboard and job API."""
    address: str | None = None
    """Job API to submit to (`http://HEAD:8265`); default: `$RAY_ADDRESS` of the submitting environment."""
    auth: Literal["token", "disabled"] = "token"
    """Ray's token authentication (`RAY_AUTH_MODE`): the token comes from `$RAY_AUTH_TOKEN`, `auth_token_path`, or
    `~/.ray/auth_token` (`ray get-auth-token --generate` writes one), never from the config."""
    auth_token_path: str | None = None
    """A file holding the Ray token (`RAY_AUTH_TOKEN_PATH`), readable on every node and where you submit."""
    pass_env: list[str] = []
    """Environment variables sent with the job from the submitting environment, beside every `${oc.env:VAR}` the
    config reads (e.g. `HF_TOKEN`)."""
    worker_timeout_s: int = Field(300, gt=0)
    """Seconds to wait for the head to answer and for every node to join before failing with a message."""

    @field_validator("pass_env")
    @classmethod
    def _variable_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return names
