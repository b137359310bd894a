"""faceattr/hydra_workarounds.py against the installed Hydra: the pinned version, the name of its basic sweeper, and
the jobs a real sweep launches in the order basic_sweeper_jobs says. A Hydra upgrade that changes any of them fails
here first."""

from __future__ import annotations

import json
import subprocess
import sys

import hydra
import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir

from faceattr.hydra_workarounds import BASIC_SWEEPER, HYDRA_VERSION, basic_sweeper_jobs

APP = """
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg):
    job = HydraConfig.get().job
    Path(cfg.out, f"{job.num}.json").write_text(json.dumps(list(HydraConfig.get().overrides.task)))


main()
"""


def test_hydra_is_the_pinned_version():
    assert hydra.__version__ == HYDRA_VERSION
    assert f'"hydra-core=={HYDRA_VERSION}"' in (REPO / "pyproject.toml").read_text()


def test_the_basic_sweeper_is_named_so_in_a_composed_config(tmp_path):
    (tmp_path / "app.yaml").write_text("a: 0\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = compose(config_name="app", overrides=["hydra/sweeper=basic"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == BASIC_SWEEPER


def test_a_real_sweep_launches_the_jobs_in_the_order_given(tmp_path):
    """The sweeper's params first, then the command line; c, given in both, keeps its first place and its last
    values; the last key varies fastest."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "app.yaml").write_text(
        f"a: 0\nb: 0\nc: 0\nout: {tmp_path / 'jobs'}\nhydra:\n  sweeper:\n    params:\n      c: 1,2\n"
    )
    (tmp_path / "jobs").mkdir()
    overrides = ["a=1,2", "b=x", "c=3,4"]
    subprocess.run(
        [sys.executable, "app.py", "-m", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    launched = [json.loads((tmp_path / "jobs" / f"{n}.json").read_text()) for n in range(4)]
    assert not (tmp_path / "jobs" / "4.json").exists()
    expected = basic_sweeper_jobs({"c": "1,2"}, overrides)
    assert expected == [
        ["c=3", "a=1", "b=x"],
        ["c=3", "a=2", "b=x"],
        ["c=4", "a=1", "b=x"],
        ["c=4", "a=2", "b=x"],
    ]
    assert launched == expected


def test_a_sweep_the_sweeper_cannot_expand_here_raises():
    """glob() lists a config group's options through Hydra's config loader, which only a running sweep has."""
    with pytest.raises(Exception, match="ConfigLoader is not set"):
        basic_sweeper_jobs({}, ["+model=glob(*)"])
