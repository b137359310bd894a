"""DDP simulated on the CPU: 2 processes (gloo), as a single run and as the jobs of a multirun.

Lightning starts rank 1 by re-running train.py with the same argv plus ``hydra.run.dir``; these tests check that
rank 1 trains in the same run/job dir (its ``train_ddp_process_1.log`` is there), that only rank 0 writes run.json
and prints, and, in a multirun, that rank 1 runs its job rather than a second copy of the sweep, and that a DDP
job failing on every rank is recorded without killing the sweep.
"""

from __future__ import annotations

import csv
import json

import pytest
from conftest import REPO, TINY, run_cli

pytestmark = pytest.mark.slow

DDP_CPU = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
TINY_DDP = tuple(o for o in TINY if not o.startswith(("trainer=", "model="))) + DDP_CPU


def test_single_run_on_two_cpu_processes(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "train.py",
        *TINY_DDP,
        "model=tiny_resnet",
        f"data.root={synthetic_root}",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run_dir}",
        tmp_path=tmp_path,
        timeout=180,
    )
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr  # really two processes
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 1
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran in the same run dir
    assert proc.stdout.count("run dir:") == 1  # rank 0 prints, rank 1 does not
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["run"]  # no stray run dirs


def test_multirun_of_ddp_jobs_one_failing(tmp_path, synthetic_root):
    """Job 0 fails on both ranks after rank 1 started (AdamW given SGD's nesterov: the optimizer is built inside
    fit, on each rank); job 1 then starts its own rank 1 and trains."""
    # A sweep dir that differs every microsecond: a rank-1 process that re-ran the sweep would make a second one.
    sweeps = tmp_path / "sweeps"
    proc = run_cli(
        "train.py",
        "-m",
        *TINY_DDP,
        "model=tiny_resnet",
        "optimizer=adamw,sgd",
        "++optimizer.nesterov=true",
        f"data.root={synthetic_root}",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweeps}/${{now:%H-%M-%S-%f}}",
        tmp_path=tmp_path,
        timeout=180,
    )
    output = proc.stdout + proc.stderr
    (sweep_dir,) = list(sweeps.iterdir())
    assert output.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2  # each job started its own rank 1
    assert output.count("Launching 2 jobs locally") == 1 and proc.stdout.count("Summary of") == 1
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        assert (sweep_dir / job / "train_ddp_process_1.log").is_file()  # rank 1 ran in this job's dir
    failed = json.loads((sweep_dir / "0" / "run.json").read_text())
    assert failed["status"] == "failed" and "nesterov" in failed["error"]
    record = json.loads((sweep_dir / "1" / "run.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 1
    # One TensorBoard run (rank 0 only), named after the job's overrides.
    event_dirs = {p.parent.name for p in (sweep_dir / "1").rglob("events.out.tfevents.*")}
    name = "++optimizer.nesterov=True,data.batch_size=16,data.image_size=32,model=tiny_resnet,optimizer=sgd,"
    assert event_dirs == {name + "trainer.max_epochs=1,trainer=ddp"}
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["status"]) for r in rows] == [("1", "completed"), ("0", "failed")]


def test_rank_processes_of_a_sweep_job_rerun_that_job_as_a_single_run():
    """The command line Lightning re-runs for ranks 1..N-1 of a sweep job: that job's overrides, no sweep, same
    config flags; Lightning then appends hydra.run.dir (set to the job dir while the job runs)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from faceattr.sweep.jobs import child_argv

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["model=tiny_vit", "trainer=ddp", "hydra.sweep.dir=/sweeps/x", "hydra.mode=MULTIRUN"],
            return_hydra_config=True,
        )
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        argv = child_argv(
            ["train.py", "-m", "-cd", "/extra/conf", "--config-name=train", "model=tiny_resnet,tiny_vit", "trainer=ddp"]
        )
    finally:
        HydraConfig.instance().cfg = saved
    assert argv == [
        "train.py",
        "-cd",
        "/extra/conf",
        "--config-name=train",
        "model=tiny_vit",
        "trainer=ddp",
        "hydra.sweep.dir=/sweeps/x",
        "hydra.mode=RUN",
    ]
