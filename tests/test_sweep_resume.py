"""Resumable sweeps, seed groups in the summary and median pruning of Optuna trials (docs/sweeps.md).

One 2-backbone x 3-seed sweep through the CLI is summarized with seed groups, then "killed" (one job left running,
one failed) and re-run with the same command; the rules themselves are checked in-process.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from conftest import TINY, run_script
from omegaconf import OmegaConf

from faceattr.errors import UserError
from faceattr.sweep.history import MetricHistory
from faceattr.sweep.pruning import pruning_decision
from faceattr.sweep.repeat_groups import interval
from faceattr.sweep.resume_sweep import check_before_launch
from faceattr.sweep.summary import build_summary

TINY_NO_MODEL = tuple(o for o in TINY if not o.startswith("model="))
JOBS = [
    ("test_resnet", "1"),
    ("test_resnet", "2"),
    ("test_resnet", "3"),
    ("test_vit", "1"),
    ("test_vit", "2"),
    ("test_vit", "3"),
]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sweep_args(sweep_dir: Path, data_root: Path, seeds: str = "1,2,3") -> tuple[str, ...]:
    return (
        "-m",
        *TINY_NO_MODEL,
        "model=tiny_resnet",
        "model.backbone=test_resnet,test_vit",
        f"seed={seeds}",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep_dir}",
    )


def file_state(path: Path) -> tuple[bytes, int, int]:
    """What rewriting a file changes: its bytes, its mtime and (atomic writes) its inode."""
    stat = path.stat()
    return path.read_bytes(), stat.st_mtime_ns, stat.st_ino


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory, synthetic_root):
    """A real 2-backbone x 3-seed sweep (6 jobs, basic launcher), in this process: (sweep dir, CompletedProcess)."""
    tmp = tmp_path_factory.mktemp("seed_sweep")
    sweep_dir = tmp / "multirun"
    proc = run_script("train.py", *sweep_args(sweep_dir, synthetic_root), tmp_path=tmp)
    return sweep_dir, proc


@pytest.mark.slow
def test_seed_sweep_summary_has_one_row_per_backbone_with_mean_std_and_interval(seed_sweep):
    from scipy.stats import t

    sweep_dir, proc = seed_sweep
    records = {job: json.loads((sweep_dir / str(job) / "run.json").read_text()) for job in range(6)}
    assert all(r["status"] == "completed" for r in records.values())
    groups = read_csv(sweep_dir / "summary_groups.csv")
    assert sorted(g["group"] for g in groups) == ["model.backbone=test_resnet", "model.backbone=test_vit"]
    means = []
    for group in groups:
        backbone = group["group"].split("=")[1]
        jobs = [job for job, (b, _) in enumerate(JOBS) if b == backbone]
        assert group["members"].split() == [str(job) for job in jobs] and group["seeds"] == "1 2 3"
        values = [records[job]["best_score"] for job in jobs]
        mean, std = statistics.fmean(values), statistics.stdev(values)
        half = t.ppf(0.975, 2) * std / 3**0.5
        assert int(group["val_auroc_best_n"]) == 3
        assert float(group["val_auroc_best_mean"]) == pytest.approx(mean)
        assert float(group["val_auroc_best_std"]) == pytest.approx(std)
        assert float(group["val_auroc_best_ci95_low"]) == pytest.approx(mean - half)
        assert float(group["val_auroc_best_ci95_high"]) == pytest.approx(mean + half)
        test_values = [records[job]["test"]["test/auroc"] for job in jobs]
        assert float(group["test_auroc_mean"]) == pytest.approx(statistics.fmean(test_values))
        means.append(mean)
    assert means == sorted(means, reverse=True)  # ranked by mean validation score
    assert [g["rank"] for g in groups] == ["1", "2"]
    # The printed table and summary.md: two group rows "mean ± std [low, high]", members linked, then the runs.
    markdown = (sweep_dir / "summary.md").read_text()
    group_lines = [line for line in markdown.splitlines() if line.startswith("| ") and " ± " in line]
    assert len(group_lines) == 2 and all("model.backbone=" in line and "[0." in line for line in group_lines)
    assert sorted(line.count("](") for line in group_lines) == [3, 3] and any("[0](0/)" in line for line in group_lines)
    assert "2 seed groups" in proc.stdout and len(read_csv(sweep_dir / "summary.csv")) == 6


@pytest.mark.slow
def test_killed_sweep_rerun_with_the_same_command_skips_completed_jobs(seed_sweep, synthetic_root, tmp_path):
    sweep_dir, _ = seed_sweep
    # Simulate a sweep killed in job 1 (its record says running: it never ended) whose job 4 had failed early.
    interrupted, failed = sweep_dir / "1", sweep_dir / "4"
    for job, status in ((interrupted, "running"), (failed, "failed")):
        record = json.loads((job / "run.json").read_text())
        (job / "run.json").write_text(json.dumps({"status": status, "overrides": record["overrides"]}))
    for checkpoint in (failed / "checkpoints").iterdir():
        checkpoint.unlink()  # failed before its first checkpoint: it starts over
    untouched = {job: file_state(sweep_dir / job / "run.json") for job in ("0", "2", "3", "5")}

    proc = run_script("train.py", *sweep_args(sweep_dir, synthetic_root), tmp_path=tmp_path)  # the same command
    assert "resuming the sweep" in proc.stdout + proc.stderr
    assert {job: file_state(sweep_dir / job / "run.json") for job in untouched} == untouched
    resumed = OmegaConf.load(interrupted / "config.yaml")
    assert resumed.ckpt_path == str(interrupted / "checkpoints" / "last.ckpt")  # continued, not started over
    assert OmegaConf.load(failed / "config.yaml").ckpt_path is None and any((failed / "checkpoints").glob("*.ckpt"))
    for job in (interrupted, failed):
        assert json.loads((job / "run.json").read_text())["status"] == "completed"
    rows = read_csv(sweep_dir / "summary.csv")
    assert sorted(r["job"] for r in rows) == [str(job) for job in range(6)]
    assert {r["status"] for r in rows} == {"completed"}
    assert [int(g["val_auroc_best_n"]) for g in read_csv(sweep_dir / "summary_groups.csv")] == [3, 3]


@pytest.mark.slow
def test_a_sweep_dir_made_by_another_command_is_refused_before_any_job(seed_sweep, synthetic_root, tmp_path):
    sweep_dir, _ = seed_sweep
    before = {p: file_state(p) for p in sorted(sweep_dir.rglob("*")) if p.is_file()}
    # Same values, other order: job 0 would be seed=3 where the sweep dir holds seed=1.
    proc = run_script("train.py", *sweep_args(sweep_dir, synthetic_root, seeds="3,2,1"), tmp_path=tmp_path, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "job 0 was run with [seed=1] where this command gives it [seed=3]" in lines[0]
    assert "python train.py -m " in lines[0] and "seed=1,2,3" in lines[0]  # the command that made it
    assert {p: file_state(p) for p in sorted(sweep_dir.rglob("*")) if p.is_file()} == before


def test_resume_option_in_a_multirun_points_to_hydra_sweep_dir(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": ["seed=1,2"]}}}), sweep_dir / "multirun.yaml")
    config = OmegaConf.create({"resume": str(sweep_dir), "hydra": {"sweep": {"dir": str(tmp_path / "new")}}})
    with pytest.raises(UserError) as error:
        check_before_launch(config)
    message = str(error.value)
    assert "resume= continues a single run" in message
    assert f"python train.py -m seed=1,2 hydra.sweep.dir={sweep_dir}" in message and "\n" not in message


def test_optuna_into_a_sweep_dir_with_jobs_is_refused(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "run.json").write_text(json.dumps({"status": "completed", "overrides": ["optimizer.lr=0.1"]}))
    config = OmegaConf.create(
        {
            "resume": None,
            "hydra": {
                "sweep": {"dir": str(tmp_path)},
                "sweeper": {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"},
                "overrides": {"task": []},
            },
        }
    )
    with pytest.raises(UserError, match="continues through its study storage"):
        check_before_launch(config)


def history(values: dict[int, float], mode: str = "max") -> MetricHistory:
    return MetricHistory("val/auroc", mode, dict(values))


def test_median_pruning_rule():
    completed = [history({1: 0.6, 2: 0.7}), history({1: 0.7, 2: 0.8}), history({1: 0.8})]
    job = history({1: 0.62})
    assert pruning_decision(job, completed, 1, n_startup_trials=3, n_warmup_epochs=0) == {
        "epoch": 1,
        "best": 0.62,
        "median": 0.7,
        "trials": 3,
    }
    assert pruning_decision(job, completed, 1, n_startup_trials=4, n_warmup_epochs=0) is None  # too few completed
    assert pruning_decision(job, completed, 1, n_startup_trials=1, n_warmup_epochs=1) is None  # warm-up epoch
    # The best so far counts, not the last value; a tie goes on; epoch 2 has two values (median 0.75).
    assert pruning_decision(history({1: 0.76, 2: 0.5}), completed, 2, 1, 0) is None
    assert pruning_decision(history({1: 0.7}), completed, 1, 1, 0) is None
    assert pruning_decision(history({1: 0.6, 2: 0.74}), completed, 2, 1, 0)["median"] == pytest.approx(0.75)
    assert pruning_decision(history({1: 0.6}), completed, 3, 1, 0) is None  # nobody reached epoch 3
    losses = [history({1: 0.3}, "min"), history({1: 0.5}, "min")]
    assert pruning_decision(history({1: 0.45}, "min"), losses, 1, 1, 0)["median"] == pytest.approx(0.4)
    assert pruning_decision(history({1: 0.35}, "min"), losses, 1, 1, 0) is None


def test_interval_is_the_student_t_interval_of_the_mean():
    stats = interval([1.0, 2.0, 3.0])
    assert (stats.n, stats.mean, stats.std) == (3, 2.0, 1.0)
    assert stats.low == pytest.approx(2.0 - 4.302652729911275 / 3**0.5)  # t(0.975, 2)
    assert stats.high == pytest.approx(2.0 + 4.302652729911275 / 3**0.5)
    single = interval([0.7])
    assert (single.n, single.mean, single.std, single.low) == (1, 0.7, None, None)
    assert interval([]) is None


def write_run(job_dir: Path, overrides: list[str], score: float, status: str = "completed") -> None:
    job_dir.mkdir(parents=True)
    (job_dir / "run.json").write_text(
        json.dumps(
            {
                "status": status,
                "overrides": overrides,
                "monitor": "val/auroc",
                "best_score": score,
                "val_auroc_best": score,
            }
        )
    )


def test_without_seeds_varying_the_summary_has_no_groups(tmp_path):
    for job, (lr, score) in enumerate((("0.1", 0.7), ("0.01", 0.8))):
        write_run(tmp_path / str(job), [f"optimizer.lr={lr}", "seed=7"], score)
    assert build_summary([tmp_path]).groups == []


def test_compare_runs_groups_runs_of_different_sweeps_by_seed(tmp_path):
    from scripts.compare_runs import main

    for sweep, seed in (("a", 1), ("b", 2)):
        for job, (lr, score) in enumerate((("0.1", 0.70 + seed / 100), ("0.01", 0.80 + seed / 100))):
            write_run(tmp_path / sweep / str(job), [f"optimizer.lr={lr}", f"seed={seed}"], score)
    write_run(tmp_path / "b" / "2", ["optimizer.lr=0.01", "seed=3"], 0.5, status="pruned")
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")]) == 0
    rows = read_csv(tmp_path / "out" / "summary_groups.csv")
    assert [(r["group"], r["members"], r["completed"]) for r in rows] == [
        ("optimizer.lr=0.01", "a/1 b/1 b/2", "2"),
        ("optimizer.lr=0.1", "a/0 b/0", "2"),
    ]
    assert float(rows[0]["val_auroc_best_mean"]) == pytest.approx(0.815)
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert "[a/1](../a/1/)" in markdown and "pruned" in markdown


# Optuna with a bad region: optimizer.lr=0.0 never learns. The sampler (TPE, seed 10, optuna 2.10) draws 0.01 first,
# then 0.0; with one completed trial making the median, the second is pruned after its first epoch.
OPTUNA_BAD_REGION = (
    "hparams_search=optuna",
    "model.backbone=test_resnet",
    "optimizer.lr=choice(0.01,0.0)",
    "optimizer.weight_decay=0.0",
    "hydra.sweeper.sampler.seed=10",
    "hydra.sweeper.n_trials=2",
    "callbacks.median_pruning.n_startup_trials=1",
    "callbacks.median_pruning.n_warmup_epochs=0",
)


@pytest.mark.slow
def test_optuna_trials_in_a_bad_region_are_pruned(tmp_path, synthetic_root):
    sweep_dir = tmp_path / "optuna"
    proc = run_script(
        "train.py",
        "-m",
        *TINY,
        *OPTUNA_BAD_REGION,
        f"data.root={synthetic_root}",
        "trainer.max_epochs=2",
        f"hydra.sweep.dir={sweep_dir}",
        tmp_path=tmp_path,
    )
    good, bad = (json.loads((sweep_dir / job / "run.json").read_text()) for job in ("0", "1"))
    assert "optimizer.lr=0.01" in good["overrides"] and "optimizer.lr=0.0" in bad["overrides"]
    assert good["status"] == "completed" and good["epochs"] == 2
    assert bad["status"] == "pruned" and bad["epochs"] == 1 and bad["pruned"]["epoch"] == 1
    assert bad["pruned"]["best"] < bad["pruned"]["median"] and "at epoch 1, below the median" in bad["reason"]
    assert bad["best_checkpoint"] and bad["test"]  # the best checkpoint so far was tested as usual
    rows = {r["job"]: r for r in read_csv(sweep_dir / "summary.csv")}
    assert (rows["0"]["status"], rows["0"]["rank"]) == ("completed", "1")
    assert (rows["1"]["status"], rows["1"]["rank"]) == ("pruned", "")
    assert "1 pruned" in proc.stdout and "pruned: best val/auroc" in proc.stdout
