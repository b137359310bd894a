"""Shared fixtures: generated CelebA-format data and one tiny trained run, made once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from faceattr.config_schema import register_schemas
from faceattr.resolvers import register_resolvers

REPO = Path(__file__).resolve().parents[1]
# In-process tests compose and instantiate the configs as train.py does: with the project's resolvers and config
# schemas registered.
register_resolvers()
register_schemas()

# Tiny, fast settings shared by the end-to-end runs: test_resnet at 32x32, synchronous loading, no progress bar.
TINY = (
    "model=tiny_resnet",
    "data.image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer=cpu",
    "callbacks.progress_bar=null",
    "callbacks.pictures=null",
)


def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: offline, CPU only, caches under ``tmp_path``."""
    env = dict(os.environ)
    env.update(
        FACEATTR_CACHE=str(tmp_path / "cache"),
        BENTOML_HOME=str(tmp_path / "bentoml"),
        HF_HUB_OFFLINE="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONUNBUFFERED="1",
        HYDRA_FULL_ERROR="0",
    )
    return env


def run_cli(script: str, *args: str, tmp_path: Path, check: bool = True, timeout: int = 300):
    """Run ``python <script> args...`` from the repo root; return the CompletedProcess (text output)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=REPO,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A generated CelebA folder (original layout) of 160 images."""
    from faceattr.data.synthetic import generate_celeba

    return generate_celeba(tmp_path_factory.mktemp("data") / "celeba", num_images=160, seed=0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synthetic_root) -> Path:
    """The run dir of a 2-epoch tiny training run through the CLI (checkpoints, TensorBoard events, run.json)."""
    tmp = tmp_path_factory.mktemp("tiny_run")
    run_dir = tmp / "run"
    run_cli(
        "train.py",
        *TINY,
        f"data.root={synthetic_root}",
        "trainer.max_epochs=2",
        f"hydra.run.dir={run_dir}",
        tmp_path=tmp,
    )
    return run_dir
