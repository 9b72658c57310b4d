"""cluster.yaml and tests/cluster-local.yaml are checked without any cloud account.

* Ray's own cluster-config schema (ray/autoscaler/ray-schema.json, shipped in the `ray` wheel)
  and Ray's own checks (`prepare_config` + `validate_config`, what `ray up` runs before it
  touches a provider), so an edit `ray up` would reject fails here first; and deliberately
  broken copies must be rejected, so we know the check has teeth.
* The package pins in cluster.yaml's install commands equal pyproject.toml's.
* What the cluster promises beyond the schema: GPU counts that match the instance types, MLflow
  bound to the private IP (never 0.0.0.0), the sweep's env vars exported on every node, and the
  documented commands still parse with raypost's CLI.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import tomllib
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"
LOCAL_YAML = REPO / "tests" / "cluster-local.yaml"
SCHEMA_PATH = Path(ray.autoscaler.__file__).parent / "ray-schema.json"

COMMAND_LISTS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)

# vCPUs and GPUs of the instance types a node type may use (AWS spec sheets). A node type's
# `resources` must say the same, or the autoscaler launches the wrong machine for a trial.
INSTANCE_SPECS = {
    "m6i.xlarge": {"CPU": 4, "GPU": 0},
    "m5.xlarge": {"CPU": 4, "GPU": 0},
    "g5.xlarge": {"CPU": 4, "GPU": 1},
    "g5.2xlarge": {"CPU": 8, "GPU": 1},
    "g5.12xlarge": {"CPU": 48, "GPU": 4},
    "g5.48xlarge": {"CPU": 192, "GPU": 8},
}

# Installed on the head only, not raypost dependencies: must still be pinned exactly.
HEAD_ONLY_PACKAGES = {"psycopg2-binary", "boto3"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def ray_checks(config: dict) -> dict:
    """What `ray up` does to a config before it calls the cloud: fill in defaults, validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def cluster() -> dict:
    return load(CLUSTER_YAML)


def all_commands(config: dict) -> list[str]:
    return [cmd for key in COMMAND_LISTS for cmd in config.get(key) or []]


# --- Ray's schema and Ray's validation -------------------------------------------------------


@pytest.mark.parametrize("path", [CLUSTER_YAML, LOCAL_YAML], ids=lambda p: p.name)
def test_config_passes_rays_schema_and_validation(path, schema):
    config = load(path)
    jsonschema.validate(config, schema)
    prepared = ray_checks(config)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def _unknown_top_level_key(c):
    c["max_worker"] = 4  # typo of max_workers


def _wrong_type(c):
    c["max_workers"] = "ten"


def _node_type_without_resources(c):
    del c["available_node_types"]["gpu-1x"]["resources"]


def _fractional_gpu_resource(c):
    c["available_node_types"]["gpu-1x"]["resources"]["GPU"] = 0.5


def _unknown_node_type_key(c):
    c["available_node_types"]["gpu-1x"]["min_worker"] = 1


def _command_that_is_not_a_string(c):
    # What YAML makes of an unquoted command containing ": ".
    c["setup_commands"].append({"python -c \"print('ready": "ray')\""})


def _head_type_not_defined(c):
    c["head_node_type"] = "no-such-type"


def _min_workers_above_max_workers(c):
    c["available_node_types"]["gpu-1x"]["min_workers"] = 20


@pytest.mark.parametrize(
    "break_it, reason",
    [
        (_unknown_top_level_key, r"'max_worker' was unexpected"),
        (_wrong_type, r"'ten' is not of type 'integer'"),
        (_node_type_without_resources, r"'resources' is a required property"),
        (_fractional_gpu_resource, r"0\.5 is not of type 'integer'"),
        (_unknown_node_type_key, r"'min_worker' was unexpected"),
        (_command_that_is_not_a_string, r"is not of type 'string'"),
        (_head_type_not_defined, r"head_node_type` must be one of"),
        (_min_workers_above_max_workers, r"max_workers` is smaller than the sum of `min_workers"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_broken_copy_is_rejected(break_it, reason, cluster, schema):
    broken = copy.deepcopy(cluster)
    break_it(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=reason):
        jsonschema.validate(broken, schema)
        ray_checks(broken)


# --- pins ------------------------------------------------------------------------------------

_OPTIONS_WITH_VALUE = {"--python", "-p", "--index-url", "-i", "--extra-index-url", "-e", "--editable",
                       "-r", "--requirement", "-c", "--constraint", "--index-strategy"}
_SHELL_STOP = {"&&", "||", ";", "|", "then", "else", "fi"}


def installed_requirements(config: dict) -> list[Requirement]:
    """Every requirement named by a `pip install` / `uv pip install` in the config's commands."""
    reqs = []
    for command in all_commands(config):
        for line in command.splitlines():
            for part in re.split(r"\bpip install\b", line)[1:]:
                tokens = shlex.split(part.replace(";", " ; "))
                skip_next = False
                for tok in tokens:
                    if skip_next:
                        skip_next = False
                        continue
                    if tok in _SHELL_STOP:
                        break
                    if tok in _OPTIONS_WITH_VALUE:
                        skip_next = True
                        continue
                    if tok.startswith("-"):
                        continue
                    reqs.append(Requirement(tok))
    return reqs


def pyproject_requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower(): Requirement(d) for d in deps}


def test_pins_equal_pyproject(cluster):
    wanted = pyproject_requirements()
    installed: dict[str, list[Requirement]] = {}
    for req in installed_requirements(cluster):
        installed.setdefault(req.name.lower(), []).append(req)

    missing = sorted(set(wanted) - set(installed))
    assert not missing, f"cluster.yaml does not install these pyproject.toml dependencies: {missing}"
    for name, req in wanted.items():
        for got in installed[name]:
            assert (got.specifier, got.extras) == (req.specifier, req.extras), (
                f"cluster.yaml installs {got}, pyproject.toml pins {req}"
            )
    extra = sorted(set(installed) - set(wanted) - HEAD_ONLY_PACKAGES)
    assert not extra, f"cluster.yaml installs packages pyproject.toml does not know: {extra}"
    for name in HEAD_ONLY_PACKAGES & set(installed):
        for got in installed[name]:
            assert str(got.specifier).startswith("=="), f"unpinned head-only package: {got}"


def test_torch_build_per_node_kind(cluster):
    torch_lines = [
        line.strip()
        for cmd in cluster["setup_commands"]
        for line in cmd.splitlines()
        if re.search(r"pip install .*\btorch==", line)
    ]
    # One CUDA install (PyPI) for GPU nodes, one CPU install (PyTorch's CPU index) for the head.
    assert len(torch_lines) == 2, torch_lines
    assert sum("download.pytorch.org/whl/cpu" in line for line in torch_lines) == 1, torch_lines
    # ...and the GPU nodes refuse to come up with a CPU-only torch.
    assert any("torch.version.cuda" in cmd and "cuda.is_available" in cmd for cmd in cluster["worker_setup_commands"])


def test_parser_finds_what_it_should():
    # Guards the parser above against silently matching nothing.
    fake = {"setup_commands": ['if x; then uv pip install --index-url U "torch==1.0"; fi',
                               'uv pip install -e ~/raypost && pip install "a[b]==2" c']}
    assert [str(r) for r in installed_requirements(fake)] == ["torch==1.0", "a[b]==2", "c"]


# --- what the cluster promises ---------------------------------------------------------------


def test_node_resources_match_instance_types(cluster):
    for name, node_type in cluster["available_node_types"].items():
        instance = node_type["node_config"]["InstanceType"]
        assert instance in INSTANCE_SPECS, f"{name}: add {instance}'s vCPU/GPU counts to INSTANCE_SPECS"
        spec, resources = INSTANCE_SPECS[instance], node_type["resources"]
        if name == cluster["head_node_type"]:
            assert resources.get("GPU", 0) == 0, "the head is the CPU node"
            continue
        assert resources.get("GPU") == spec["GPU"] > 0, f"{name}: GPU {resources.get('GPU')} != {instance}'s {spec['GPU']}"
        assert resources.get("CPU") == spec["CPU"], f"{name}: CPU {resources.get('CPU')} != {instance}'s {spec['CPU']}"


def test_every_node_runs_the_same_image(cluster):
    images = {t["node_config"]["ImageId"] for t in cluster["available_node_types"].values()}
    assert len(images) == 1, images


def test_services_are_not_bound_to_all_interfaces(cluster):
    commands = all_commands(cluster)
    assert not [c for c in commands if "0.0.0.0" in c], "something binds 0.0.0.0"
    mlflow = [c for c in commands if "mlflow server" in c]
    assert len(mlflow) == 1
    assert re.search(r"--host \$RAYPOST_HEAD_IP\b", mlflow[0]), "MLflow must bind the head's private IP"
    assert "--backend-store-uri postgresql" in mlflow[0]
    assert re.search(r"--artifacts-destination s3://", mlflow[0]) and "--serve-artifacts" in mlflow[0]
    start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start


def _env_exports(commands: list[str]) -> set[str]:
    return set(re.findall(r"export ([A-Z_][A-Z0-9_]*)=", "\n".join(commands)))


@pytest.mark.parametrize("path", [CLUSTER_YAML, LOCAL_YAML], ids=lambda p: p.name)
def test_sweep_env_is_exported_on_every_node(path):
    config = load(path)
    common = _env_exports(config["setup_commands"])
    assert {"MLFLOW_TRACKING_URI", "RAYPOST_STORAGE", "PATH"} <= common, common
    head = common | _env_exports(config.get("head_setup_commands") or [])
    assert "RAYPOST_OPTUNA_STORAGE" in head
    # ...in a file that every login shell (ray exec/attach, ray start) sources.
    assert any("~/.bashrc" in cmd and "raypost_env" in cmd for cmd in config["setup_commands"])


def test_header_documents_the_workflow_and_it_parses():
    header = "\n".join(
        line[1:].strip() for line in CLUSTER_YAML.read_text().splitlines() if line.startswith("#")
    )
    for needle in ("ray up cluster.yaml", "ray dashboard cluster.yaml", "ray down cluster.yaml",
                   "ray attach", "-L 5000:", "raypost promote"):
        assert needle in header, f"header comment lost: {needle}"
    from raypost.cli import build_parser

    commands = re.findall(r"ray exec (?:--tmux )?cluster\.yaml '(raypost [^']+)'", header)
    assert any(c.startswith("raypost sweep dept --address auto") for c in commands), commands
    assert any(c.startswith("raypost promote ") for c in commands), commands
    for command in commands:
        # argparse exits (so the test fails) on a flag or subcommand raypost does not have.
        build_parser().parse_args(shlex.split(command)[1:])


def test_local_config_is_safe_on_a_shared_machine():
    config = load(LOCAL_YAML)
    start = "\n".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert not re.search(r"(^|[;&|]\s*)ray stop\b", start, re.M), "`ray stop` stops everybody's Ray"
    assert "--temp-dir=${RAY_TMPDIR:?}" in start, "Ray's temp dir must not default to /tmp/ray"
    for default_port in ("6379", "10001", "8265", "52365"):
        assert not re.search(rf"\b{default_port}\b", start), f"default port {default_port} in use by others"
