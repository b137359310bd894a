"""Faults at write and read time: a full disk while saving a checkpoint, two runs started in the same second, a
truncated checkpoint given to resume, ckpt_path=, export and the checkpoint readers (eval's too).

The disk-full scenario runs twice: on a real, small tmpfs (needs root and permission to mount; skipped otherwise) and
with ENOSPC injected into the write after half of the checkpoint's bytes (runs anywhere).

Most scenarios run train.py's and export.py's `main` in this process (conftest.run_main: no seconds of imports per
run); the ones about processes (two launches at once, the run-dir name of each process) start real ones."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, TINY, cli_env, run_main

pytestmark = pytest.mark.slow

# The one line of a full disk at checkpoint time.
NO_SPACE = re.compile(
    r"error: no space left on device writing (?P<file>\S+\.ckpt) \((?P<free>[\d.]+ [kMGT]?B) free, "
    r"~(?P<needed>[\d.]+ [kMGT]?B) needed\): free space or set hydra\.run\.dir=\.\.\."
)


def full_disk_at_the_third_checkpoint(write):
    """A replacement for ``faceattr.atomic._write`` whose checkpoint writes hit a full disk: the 3rd checkpoint
    (epoch 1's; epoch 0 saves the best and last.ckpt) fails with ENOSPC after half of its bytes are written, as a
    real full disk does."""
    big_writes = []

    def full_disk(file, data):
        if len(data) > 1_000_000:
            big_writes.append(len(data))
            if len(big_writes) == 3:
                write(file, memoryview(data)[: len(data) // 2])
                file.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(file, data)

    return full_disk


# Runs train.py with Hydra's ${now:} frozen at one instant: every launch starts "in the same second".
SAME_SECOND = """
import datetime, runpy, sys
import hydra.core.utils

class SameSecond(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2031, 1, 2, 3, 4, 5)

hydra.core.utils.datetime = SameSecond
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _error_line(status: int, stderr: str) -> str:
    """The `error: ...` line of a run that failed with a user error: status 2, exactly one such line, the last
    line, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert status == 2, (status, stderr[-3000:])
    assert errors == [lines[-1]] and "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def _loads(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure to load
        return False
    return True


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _check_disk_full_then_resume(status: int, stderr: str, run_dir: Path, before_resume, tmp_path: Path):
    """The disk-full outcome (train.py's exit status and stderr): one line, a failed run.json with it, no truncated
    or temporary file; then, after ``before_resume()`` (which frees space), ``resume=`` finishes the run from its
    last good checkpoint."""
    line = _error_line(status, stderr)
    match = NO_SPACE.fullmatch(line)
    assert match, line
    assert Path(match["file"]).parent == run_dir / "checkpoints" and match["needed"].endswith("MB")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] == line.removeprefix("error: ")
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".partial")]
    checkpoints = [p for p in files if p.suffix == ".ckpt"]
    assert not Path(match["file"]).exists() and checkpoints
    assert all(_loads(p) for p in checkpoints), [(p, p.stat().st_size) for p in checkpoints]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 0

    before_resume()
    assert run_main("train.py", f"resume={run_dir}", tmp_path=tmp_path) == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 2
    assert Path(record["best_checkpoint"]).is_file() and all(_loads(p) for p in run_dir.rglob("*.ckpt"))


DISK_FULL_ARGS = (*TINY, "trainer.max_epochs=2", "test=false")


def test_disk_full_at_checkpoint_time_on_a_small_tmpfs(tmp_path, tiny_run, synthetic_root, capfd):
    """A run dir on a tmpfs with room for epoch 0's two checkpoints but not for a third: epoch 1's save fails (train.py
    in this process: its exit status and one line; the script's own process is tested in test_train_cli.py)."""
    mount = tmp_path / "small"
    mount.mkdir()
    checkpoint = (tiny_run / "checkpoints" / "last.ckpt").stat().st_size
    size_kb = int(2.5 * checkpoint / 1024) + 256  # 2 checkpoints + config, logs, events; a 3rd does not fit
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mount)], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("no mount command (the injected-ENOSPC test covers this fault)")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the injected-ENOSPC test covers this")
    try:
        run_dir = mount / "run"
        status = run_main(
            "train.py", *DISK_FULL_ARGS, f"data.root={synthetic_root}", f"hydra.run.dir={run_dir}", tmp_path=tmp_path
        )

        def free_space():
            subprocess.run(["mount", "-o", f"remount,size={size_kb * 4}k", str(mount)], check=True)

        _check_disk_full_then_resume(status, capfd.readouterr().err, run_dir, free_space, tmp_path)
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_disk_full_at_checkpoint_time_injected(tmp_path, synthetic_root, monkeypatch, capfd):
    """ENOSPC raised by the checkpoint write itself, half of the file written; a stale temporary file that a killed
    writer left behind is removed when the run resumes."""
    import faceattr.atomic as atomic

    run_dir = tmp_path / "run"
    with monkeypatch.context() as full_disk:
        full_disk.setattr(atomic, "_write", full_disk_at_the_third_checkpoint(atomic._write))
        status = run_main(
            "train.py", *DISK_FULL_ARGS, f"data.root={synthetic_root}", f"hydra.run.dir={run_dir}", tmp_path=tmp_path
        )
    stale = run_dir / "checkpoints" / ".last.ckpt.0badc0de.partial"

    def leave_a_stale_temporary():
        stale.write_bytes(b"PK\x03\x04 half a checkpoint of a killed run")

    _check_disk_full_then_resume(status, capfd.readouterr().err, run_dir, leave_a_stale_temporary, tmp_path)
    assert not stale.exists()


def test_two_launches_in_the_same_second_get_two_complete_run_dirs(tmp_path, synthetic_root):
    """Two train.py processes at once, both starting at the same second, each into the default outputs/ dir."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                SAME_SECOND,
                str(REPO / "train.py"),
                *TINY,
                "trainer.max_epochs=1",
                "test=false",
                f"data.root={synthetic_root}",
                f"seed={seed}",
            ],
            cwd=tmp_path,
            env=cli_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    runs = sorted((tmp_path / "outputs" / "2031-01-02").iterdir())
    assert len(runs) == 2 and all(re.fullmatch(r"03-04-05-[0-9a-z]{4}", run.name) for run in runs), runs
    seeds = set()
    for run in runs:
        record = json.loads((run / "run.json").read_text())
        assert record["status"] == "completed" and record["epochs"] == 1
        seeds.add(next(o for o in record["overrides"] if o.startswith("seed=")))
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["paths"]["output_dir"] == str(run) and f"seed={config['seed']}" in record["overrides"]
        assert _loads(run / "checkpoints" / "last.ckpt")
        assert Path(record["best_checkpoint"]).parent == run / "checkpoints"
        assert len(list((run / "tensorboard").glob("events.*"))) >= 1
    assert seeds == {"seed=1", "seed=2"}


RUN_DIRS = """
import sys
from hydra import compose, initialize_config_dir
from faceattr.config.schemas import register_schemas
from faceattr.resolvers import register_resolvers

register_resolvers()
register_schemas()
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    first = compose("train", return_hydra_config=True)
    again = compose("train", return_hydra_config=True)  # another config object, resolved again
    print(first.hydra.run.dir, first.hydra.sweep.dir, again.hydra.run.dir)
"""


def test_cluster_array_jobs_and_plain_launches_get_distinct_dirs(tmp_path):
    """The run and sweep dir names: <time>-<SLURM job id> for array jobs, <time>-<4 random characters> otherwise;
    the id is the same within one process (Hydra may resolve the dirs more than once)."""
    dirs = []
    for env in (
        {"SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7", "SLURM_JOB_ID": "4250"},
        {"SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "8", "SLURM_JOB_ID": "4251"},
        {},
        {},
    ):
        full_env = {k: v for k, v in cli_env(tmp_path).items() if not k.startswith("SLURM_")} | env
        out = subprocess.run(
            [sys.executable, "-c", RUN_DIRS, str(REPO / "conf")],
            env=full_env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.split()
        run_dir, sweep_dir, again = out
        assert run_dir.rsplit("-", 1)[1] == sweep_dir.rsplit("-", 1)[1] == again.rsplit("-", 1)[1]
        dirs.append((run_dir, sweep_dir))
    pattern = r"{}/\d{{4}}-\d\d-\d\d/\d\d-\d\d-\d\d-{}"
    assert re.fullmatch(pattern.format("outputs", "4242_7"), dirs[0][0])
    assert re.fullmatch(pattern.format("multirun", "4242_8"), dirs[1][1])
    for run_dir, sweep_dir in dirs[2:]:
        assert re.fullmatch(pattern.format("outputs", "[0-9a-z]{4}"), run_dir)
        assert re.fullmatch(pattern.format("multirun", "[0-9a-z]{4}"), sweep_dir)
    assert dirs[2][0][-4:] != dirs[3][0][-4:]


@pytest.fixture
def run_with_truncated_best(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run whose best checkpoint (run.json's) was cut in half."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    best = run_dir / "checkpoints" / Path(record["best_checkpoint"]).name
    _truncate(best)
    return run_dir


def test_readers_refuse_a_truncated_checkpoint_and_the_best_falls_back(run_with_truncated_best):
    """read_checkpoint / load_module (export, eval) refuse it in one line naming it; resolve_checkpoint refuses it as a
    file and, as a run's best, falls back to the run's last good checkpoint and says so."""
    from faceattr.checkpoint import read_checkpoint
    from faceattr.errors import UserError
    from faceattr.model.loading import load_module
    from faceattr.run_finder import resolve_checkpoint

    run_dir = run_with_truncated_best
    record = json.loads((run_dir / "run.json").read_text())
    best = run_dir / "checkpoints" / Path(record["best_checkpoint"]).name
    for reader in (read_checkpoint, load_module, resolve_checkpoint):
        with pytest.raises(UserError) as error:
            reader(best)
        message = str(error.value)
        assert f"{best} is truncated" in message and "\n" not in message, (reader, message)

    resolved = resolve_checkpoint(run_dir)
    assert resolved.checkpoint == run_dir / "checkpoints" / "last.ckpt"
    assert f"{best} is truncated" in resolved.reason and "using last.ckpt instead" in resolved.reason
    assert read_checkpoint(resolved.checkpoint)["hyper_parameters"]["backbone"] == "test_resnet"


def test_export_of_a_run_whose_best_is_truncated_uses_the_last_good_one(
    run_with_truncated_best, tmp_path, capsys, caplog
):
    run_dir = run_with_truncated_best
    caplog.set_level(logging.INFO)  # as export.py's job logging (conf/export.yaml): INFO to stdout
    assert run_main("export.py", f"ckpt={run_dir}", "export=torchscript", "store=false", tmp_path=tmp_path) == 0
    said = capsys.readouterr().out + caplog.text
    assert "is truncated" in said and "using last.ckpt instead" in said
    metadata = json.loads((run_dir / "export" / "faceattr.json").read_text())
    assert Path(metadata["source"]["checkpoint"]) == (run_dir / "checkpoints" / "last.ckpt").resolve()
    assert (run_dir / "export" / "model.pt").is_file()
    assert not [p for p in (run_dir / "export").iterdir() if p.name.endswith(".partial")]


def test_resume_and_ckpt_path_with_a_truncated_checkpoint(tmp_path, synthetic_root, capfd, caplog):
    """resume=: a truncated last.ckpt is refused and the run resumes from its newest checkpoint that loads, saying
    so; ckpt_path=<truncated file>: one line naming it."""
    run_dir = tmp_path / "run"
    common = (*TINY, f"data.root={synthetic_root}")
    overrides = ("trainer.max_epochs=2", "test=false", "callbacks.early_stopping=null", f"hydra.run.dir={run_dir}")
    assert run_main("train.py", *common, *overrides, tmp_path=tmp_path) == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    (best,) = [p for p in (run_dir / "checkpoints").glob("epoch*.ckpt")]
    best_epoch = torch.load(best, map_location="cpu", weights_only=True)["epoch"]
    _truncate(last)

    capfd.readouterr()
    status = run_main(
        "train.py", *common, f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'other'}", tmp_path=tmp_path
    )
    line = _error_line(status, capfd.readouterr().err)
    assert f"ckpt_path={last} is not a loadable checkpoint: {last} is truncated" in line

    caplog.clear()
    assert run_main("train.py", f"resume={run_dir}", "trainer.max_epochs=3", tmp_path=tmp_path) == 0
    said = "".join(capfd.readouterr()) + caplog.text
    assert f"{last} is truncated" in said and f"resuming from {best}" in said, said[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 3
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert best_epoch < 2 and resumed["global_step"] == record["global_step"]


@pytest.mark.parametrize("fault", ["no space", "read-only", "vanished"])
def test_a_failed_write_keeps_the_previous_file_and_says_why_in_one_line(tmp_path, monkeypatch, fault):
    """write_json over an existing file: the failure leaves the old complete file and no temporary file, and is one
    line naming the file (full disk and read-only file system injected at the write; the directory really removed)."""
    import errno

    import faceattr.atomic as atomic
    from faceattr.errors import UserError

    target = tmp_path / "run" / "run.json"
    target.parent.mkdir()
    atomic.write_json(target, {"status": "completed"})
    code = {"no space": errno.ENOSPC, "read-only": errno.EROFS}.get(fault)
    if code is None:
        shutil.rmtree(target.parent)
    else:

        def failing_write(file, data):
            file.write(data[:3])
            raise OSError(code, "injected")

        monkeypatch.setattr(atomic, "_write", failing_write)
    with pytest.raises(UserError) as error:
        atomic.write_json(target, {"status": "failed", "error": "x" * 100})
    message = str(error.value)
    expected = {
        "no space": f"no space left on device writing {target} (",
        "read-only": f"read-only file system writing {target}: ",
        "vanished": f"the output directory {target.parent} vanished writing {target} ",
    }[fault]
    assert message.startswith(expected) and "\n" not in message, message
    if code is not None:
        assert json.loads(target.read_text()) == {"status": "completed"}
        assert sorted(p.name for p in target.parent.iterdir()) == ["run.json"]
