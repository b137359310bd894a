"""Sweeps through the CLI: job dirs, TensorBoard runs with HParams, the end-of-sweep summary, failures, Optuna,
compare_runs.py, and the launcher/experiment presets (composition only for SLURM)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import REPO, TINY, run_cli, run_script

pytestmark = pytest.mark.slow

CONF = REPO / "conf"
# TINY without its model choice: the sweeps below choose the model themselves.
TINY_NO_MODEL = tuple(o for o in TINY if not o.startswith("model="))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_events(folder: Path):
    """TensorBoard's own reader on one run folder: (scalar tags -> values, hparams session info, experiment)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    from tensorboard.plugins.hparams import metadata

    acc = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    acc.Reload()
    scalars = {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    content = acc.PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return scalars, hparams, experiment


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, synthetic_root):
    """A real 2-job sweep (tiny ResNet, tiny ViT) through the CLI, in this process: (sweep dir, CompletedProcess)."""
    tmp = tmp_path_factory.mktemp("sweep")
    sweep_dir = tmp / "multirun"
    proc = run_script(
        "train.py",
        "-m",
        *TINY_NO_MODEL,
        "model=tiny_resnet,tiny_vit",
        f"data.root={synthetic_root}",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep_dir}",
        tmp_path=tmp,
    )
    return sweep_dir, proc


def test_each_job_has_its_own_checkpoints_config_and_run_record(sweep):
    sweep_dir, _ = sweep
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    for job, backbone in (("0", "test_resnet"), ("1", "test_vit")):
        job_dir = sweep_dir / job
        record = json.loads((job_dir / "run.json").read_text())
        assert record["status"] == "completed" and record["backbone"] == backbone
        assert Path(record["best_checkpoint"]).parent == (job_dir / "checkpoints").resolve()
        assert Path(record["best_checkpoint"]).is_file() and (job_dir / "checkpoints" / "last.ckpt").is_file()
        assert (job_dir / "config.yaml").is_file() and (job_dir / ".hydra" / "overrides.yaml").is_file()
        assert 0.0 <= record["best_score"] <= 1.0 and "test/auroc" in record["test"] and "val_auroc_best" not in record


def test_tensorboard_runs_are_named_after_the_overrides_and_carry_hparams(sweep):
    sweep_dir, _ = sweep
    for job, model, backbone in (("0", "tiny_resnet", "test_resnet"), ("1", "tiny_vit", "test_vit")):
        runs = [p.parent for p in (sweep_dir / job).rglob("events.out.tfevents.*")]
        assert len(set(runs)) == 1, runs
        run = runs[0]
        # One folder named after the job's overrides, without the excluded noise (data.root, num_workers, ...).
        assert run.parent == sweep_dir / job / "tensorboard"
        assert f"model={model}" in run.name.split(",") and "trainer.max_epochs=1" in run.name.split(",")
        assert "data.root" not in run.name and "num_workers" not in run.name and "/" not in run.name
        scalars, hparams, experiment = read_events(run)
        assert {"val/auroc", "val/auroc_best", "test/auroc"} <= set(scalars)
        assert 0.0 <= scalars["val/auroc"][-1] <= 1.0
        # HParams: the group option's name (not its content), the backbone, and the final-metric columns.
        assert hparams["model"] == model and hparams["model.backbone"] == backbone
        assert hparams["trainer.max_epochs"] == 1.0
        metric_tags = {m.name.tag for m in experiment.metric_infos}
        assert {"val/auroc_best", "test/auroc"} <= metric_tags


def test_summary_ranks_both_jobs_with_their_checkpoints(sweep):
    sweep_dir, proc = sweep
    assert {p.name for p in sweep_dir.iterdir()} >= {"summary.md", "summary.csv", "summary.png"}
    rows = read_csv(sweep_dir / "summary.csv")
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert {r["backbone"] for r in rows} == {"test_resnet", "test_vit"}
    assert float(rows[0]["val_auroc_best"]) >= float(rows[1]["val_auroc_best"])
    for row in rows:
        record = json.loads((sweep_dir / row["job"] / "run.json").read_text())
        assert row["best_checkpoint"] == record["best_checkpoint"] and Path(row["best_checkpoint"]).is_file()
        assert (
            row["varying_overrides"]
            == {"test_resnet": "model=tiny_resnet", "test_vit": "model=tiny_vit"}[row["backbone"]]
        )
        assert float(row["num_parameters"]) > 0 and row["epochs"] == "1" and row["status"] == "completed"
        # The literature's figures beside the ranking metric (ranked on validation only).
        assert float(row["test_acc"]) == pytest.approx(record["test"]["test/acc"], abs=1e-6)
        assert float(row["test_bacc"]) == pytest.approx(record["test"]["test/bacc"], abs=1e-6)
    markdown = (sweep_dir / "summary.md").read_text()
    # The printed table (once) and summary.md name both backbones and their checkpoint files.
    assert proc.stdout.count("Summary of") == 1
    for row in rows:
        checkpoint = Path(row["best_checkpoint"]).name
        for text in (proc.stdout, markdown):
            assert row["backbone"] in text and checkpoint in text
    assert "![" in markdown and "summary.png" in markdown
    assert re.search(r"\|\s*test/acc\s*\|\s*test/bacc\s*\|", markdown)


def test_summary_plot_is_a_real_image(sweep):
    import matplotlib.image as mpimg

    sweep_dir, _ = sweep
    image = mpimg.imread(sweep_dir / "summary.png")
    height, width = image.shape[:2]
    assert width >= 1000 and height >= 300
    assert image[..., :3].std() > 0.05  # not a blank canvas


def compare_runs(*args: str) -> int:
    """``python scripts/compare_runs.py <args>`` in this process (its ``main``; the script's own process:
    test_compare_runs_bad_paths_are_one_line_errors)."""
    from scripts.compare_runs import main

    return main(list(args))


def test_compare_runs_rebuilds_the_sweep_table(sweep, tmp_path, capsys):
    sweep_dir, _ = sweep
    out = tmp_path / "cmp"
    assert compare_runs(str(sweep_dir), "--out", str(out)) == 0
    assert read_csv(out / "summary.csv") == read_csv(sweep_dir / "summary.csv")
    assert (out / "summary.png").stat().st_size > 10_000 and "test_vit" in capsys.readouterr().out


def test_compare_runs_across_sweeps(sweep, failing_sweep, tmp_path, capsys):
    """Two sweeps (as if from different days) in one table, ranked by test/auroc, failures last."""
    (first, _), (second, _) = sweep, failing_sweep
    out = tmp_path / "cmp"
    assert compare_runs(str(first), str(second), "--out", str(out), "--metric", "test/auroc") == 0
    stdout = capsys.readouterr().out
    rows = read_csv(out / "summary.csv")
    assert [r["status"] for r in rows] == ["completed"] * 3 + ["failed"]
    tests = [float(r["test_auroc"]) for r in rows[:3]]
    assert tests == sorted(tests, reverse=True)
    # Named by their path below the common folder, so jobs "0" of both sweeps stay apart.
    assert {r["job"] for r in rows} == {
        f"{first.parent.name}/multirun/0",
        f"{first.parent.name}/multirun/1",
        f"{second.parent.name}/multirun/0",
        f"{second.parent.name}/multirun/1",
    }
    assert "best test/auroc" in stdout and "not_a_timm_model" in stdout


def test_compare_runs_reads_event_files_without_run_records(sweep, tmp_path):
    """TensorBoard events alone (e.g. copied from another machine) are enough: scores come from the events."""
    import shutil

    sweep_dir, _ = sweep
    copy = tmp_path / "events_only"
    shutil.copytree(sweep_dir / "1" / "tensorboard", copy / "vit_run")
    out = tmp_path / "cmp"
    assert compare_runs(str(copy), "--out", str(out)) == 0
    (row,) = read_csv(out / "summary.csv")
    record = json.loads((sweep_dir / "1" / "run.json").read_text())
    assert row["backbone"] == "test_vit"  # from the HParams data
    assert float(row["val_auroc_best"]) == pytest.approx(record["best_score"], abs=1e-6)
    assert float(row["test_auroc"]) == pytest.approx(record["test"]["test/auroc"], abs=1e-6)


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tmp: tmp / "nope", "no such file or directory"),
        (lambda tmp: tmp, "no runs found"),
        (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "not a directory"),
    ],
    ids=["missing", "no-runs", "file"],
)
def test_compare_runs_bad_paths_are_one_line_errors(tmp_path, make_path, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    path = make_path(empty)
    proc = run_cli("scripts/compare_runs.py", str(path), "--out", str(tmp_path / "out"), tmp_path=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory, synthetic_root):
    """A 2-job sweep whose first job fails (unknown backbone), both jobs in parallel joblib worker processes (the
    sweep itself in this process)."""
    tmp = tmp_path_factory.mktemp("failing_sweep")
    sweep_dir = tmp / "multirun"
    proc = run_script(
        "train.py",
        "-m",
        *TINY,
        "model.backbone=not_a_timm_model,test_resnet",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"data.root={synthetic_root}",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep_dir}",
        tmp_path=tmp,
    )
    return sweep_dir, proc


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(failing_sweep):
    sweep_dir, proc = failing_sweep
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr  # the joblib launcher ran the jobs
    failed = json.loads((sweep_dir / "0" / "run.json").read_text())
    assert failed["status"] == "failed" and "not_a_timm_model" in failed["error"] and "\n" not in failed["error"]
    assert "model.backbone=not_a_timm_model" in failed["overrides"]
    assert "Traceback" in (sweep_dir / "0" / "train.log").read_text()
    assert json.loads((sweep_dir / "1" / "run.json").read_text())["status"] == "completed"
    rows = read_csv(sweep_dir / "summary.csv")
    assert [(r["rank"], r["status"]) for r in rows] == [("1", "completed"), ("", "failed")]
    assert rows[1]["error"] == failed["error"] and rows[1]["job"] == "0"
    assert "failed" in proc.stdout and "not_a_timm_model" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr  # the traceback is in the job's log only


# `hparams_search=optuna` once conf/train.yaml lists the group in its defaults (`- hparams_search: null`), else `+`.
HPARAMS_SEARCH = ("" if "hparams_search" in (CONF / "train.yaml").read_text() else "+") + "hparams_search=optuna"
OPTUNA_FAST = (
    HPARAMS_SEARCH,
    "model.backbone=test_resnet",
)


def test_optuna_two_trials_stored_in_sqlite_then_resumed_with_a_failing_trial(tmp_path, synthetic_root):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = (
        *TINY,
        *OPTUNA_FAST,
        f"data.root={synthetic_root}",
        "trainer.max_epochs=1",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=test",
    )
    first = tmp_path / "first"
    run_script("train.py", "-m", *common, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={first}", tmp_path=tmp_path)
    rows = read_csv(first / "summary.csv")
    assert [r["status"] for r in rows] == ["completed", "completed"]
    for row in rows:  # each trial's sampled values are its overrides
        assert "optimizer.lr=" in row["varying_overrides"] and "optimizer.weight_decay=" in row["overrides"]
    results = (first / "optimization_results.yaml").read_text()
    assert "best_value" in results and "optimizer.lr" in results
    best = max(float(r["val_auroc_best"]) for r in rows)
    assert optuna.load_study(study_name="test", storage=storage).best_value == pytest.approx(best, abs=1e-6)

    # Resume the stored study; this trial fails (bad backbone): it is counted as FAIL, the study carries on.
    second = tmp_path / "second"
    run_script(
        "train.py",
        "-m",
        *common,
        "model.backbone=not_a_timm_model",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweep.dir={second}",
        tmp_path=tmp_path,
    )
    states = [t.state for t in optuna.load_study(study_name="test", storage=storage).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.FAIL]
    (row,) = read_csv(second / "summary.csv")
    assert row["status"] == "failed" and "not_a_timm_model" in row["error"]


# ---------------------------------------------------------------------------------------------------------------
# Presets: composition only (no cluster, no real backbones on the CPU).


def compose_with_hydra(*overrides: str):
    from hydra import compose, initialize_config_dir

    from faceattr.resolvers import register_resolvers

    register_resolvers()  # ${run_id:} in hydra.sweep.dir, as train.py registers it
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_backbone_sweep_covers_the_real_backbones_with_their_own_settings():
    from omegaconf import OmegaConf

    cfg = compose_with_hydra("experiment=backbone_sweep")
    assert cfg.hydra.mode.name == "MULTIRUN"
    models = cfg.hydra.sweeper.params.model.split(",")
    assert set(models) == {"resnet18", "resnet34", "resnet50", "efficientnet_b0", "convnext_tiny", "vit_small"}
    lrs = set()
    for model in models:
        job = compose_with_hydra("experiment=backbone_sweep", f"model={model}")
        settings = OmegaConf.to_container(job.backbone_settings)[job.model.backbone]
        assert job.optimizer.lr == settings["lr"] and job.data.batch_size == settings["batch_size"]
        assert job.optimizer.weight_decay == settings["weight_decay"]
        assert job.scheduler.warmup_fraction == settings["warmup_fraction"]
        lrs.add(job.optimizer.lr)
    assert len(lrs) > 1
    # An unlisted backbone falls back to the plain defaults instead of failing.
    other = compose_with_hydra("experiment=backbone_sweep", "model=tiny_resnet")
    assert other.optimizer.lr == 1e-3 and other.data.batch_size == 64


def test_slurm_launcher_composes_from_the_ddp_trainer():
    from hydra.utils import instantiate

    cfg = compose_with_hydra(
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.submitit_folder.endswith(".submitit/%j")
    assert type(instantiate(launcher)).__name__ == "SlurmLauncher"  # the plugin accepts every parameter


def test_optuna_preset_searches_the_promised_space():
    cfg = compose_with_hydra(HPARAMS_SEARCH)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"optimizer.lr", "optimizer.weight_decay", "data.batch_size", "model.backbone"}
    assert sweeper.max_failure_rate == 1.0


# ---------------------------------------------------------------------------------------------------------------
# Groups of repeats: seeds and folds (faceattr/sweep/repeat_groups.py), from run records and then a real 5-fold sweep.


def write_job(job_dir: Path, overrides: list[str], score: float, config: dict | None = None) -> None:
    """A finished job as training leaves it: run.json (its overrides and scores), and optionally its config."""
    from omegaconf import OmegaConf

    job_dir.mkdir(parents=True)
    record = {"status": "completed", "overrides": overrides, "monitor": "val/auroc", "best_score": score}
    (job_dir / "run.json").write_text(json.dumps({**record, "test": {"test/auroc": score - 0.05}}))
    if config is not None:
        OmegaConf.save(OmegaConf.create(config), job_dir / "config.yaml")


def student_t(values: list[float]) -> tuple[float, float, float, float]:
    """mean, std and the 95% interval of the mean, computed here independently of the summary."""
    import statistics

    from scipy.stats import t

    mean, std = statistics.fmean(values), statistics.stdev(values)
    half = t.ppf(0.975, len(values) - 1) * std / len(values) ** 0.5
    return mean, std, mean - half, mean + half


def test_folds_form_groups_as_seeds_do_and_the_summary_says_folds_vary(tmp_path):
    from faceattr.sweep.summary import build_summary, format_table
    from faceattr.sweep.summary_files import write_summary

    scores = {"0.1": [0.70, 0.72, 0.69, 0.75, 0.71], "0.01": [0.80, 0.78, 0.83, 0.79, 0.81]}
    job = 0
    for lr, values in scores.items():
        for fold, score in enumerate(values):
            write_job(tmp_path / str(job), [f"optimizer.lr={lr}", "data.folds=5", f"data.fold={fold}"], score)
            job += 1
    summary = build_summary([tmp_path])
    assert summary.repeat_keys == ["data.fold"]
    write_summary(summary, tmp_path)
    groups = read_csv(tmp_path / "summary_groups.csv")
    assert [(g["group"], g["varies"], g["folds"], g["members"]) for g in groups] == [
        ("optimizer.lr=0.01", "data.fold", "0 1 2 3 4", "5 6 7 8 9"),  # best mean val/auroc first
        ("optimizer.lr=0.1", "data.fold", "0 1 2 3 4", "0 1 2 3 4"),
    ]
    assert "seeds" not in groups[0]  # seeds did not vary
    for group, lr in zip(groups, ("0.01", "0.1"), strict=True):
        mean, std, low, high = student_t(scores[lr])
        assert int(group["val_auroc_best_n"]) == 5
        assert float(group["val_auroc_best_mean"]) == pytest.approx(mean)
        assert float(group["val_auroc_best_std"]) == pytest.approx(std)
        assert float(group["val_auroc_best_ci95_low"]) == pytest.approx(low)
        assert float(group["val_auroc_best_ci95_high"]) == pytest.approx(high)
        assert float(group["test_auroc_mean"]) == pytest.approx(mean - 0.05)
    markdown = (tmp_path / "summary.md").read_text()
    assert "## Fold groups" in markdown and "2 fold groups (runs that differ only in data.fold)" in markdown
    table = format_table(summary)
    assert re.search(r"\| runs +\| folds +\|", table) and "0,1,2,3,4" in table
    mean, std, low, high = student_t(scores["0.01"])
    assert f"{mean:.4f} ± {std:.4f} [{low:.4f}, {high:.4f}]" in table


def test_seeds_and_folds_varying_together_make_one_group_of_repeats(tmp_path):
    """Repeated k-fold (2 seeds x 2 folds): one group of 4 runs, with both keys named; a key set only in the runs'
    configs (data.fold=0 here, the default) counts for the members' values but does not vary."""
    from faceattr.sweep.summary import build_summary, format_table
    from faceattr.sweep.summary_files import write_summary

    for job, (seed, fold) in enumerate((("1", "0"), ("1", "1"), ("2", "0"), ("2", "1"))):
        write_job(tmp_path / str(job), [f"seed={seed}", "data.folds=2", f"data.fold={fold}"], 0.7 + job / 100)
    summary = build_summary([tmp_path])
    assert summary.repeat_keys == ["seed", "data.fold"]
    write_summary(summary, tmp_path)
    (group,) = read_csv(tmp_path / "summary_groups.csv")
    assert (group["varies"], group["seeds"], group["folds"], group["val_auroc_best_n"]) == (
        "seed data.fold",
        "1 1 2 2",
        "0 1 0 1",
        "4",
    )
    assert "1 seed/fold group (runs that differ only in seed and data.fold)" in format_table(summary)

    seeds_only = tmp_path / "seeds"
    for job, seed in enumerate("123"):
        config = {"seed": int(seed), "data": {"folds": None, "fold": 0}}
        write_job(seeds_only / str(job), [f"seed={seed}"], 0.7, config)
    summary = build_summary([seeds_only])
    assert summary.repeat_keys == ["seed"] and [run.repeats["data.fold"] for run in summary.runs] == ["0"] * 3
    assert "3 seed" not in format_table(summary) and "1 seed group (runs that differ only in seed)" in format_table(
        summary
    )


def test_a_five_fold_sweep_summary_holds_mean_and_interval_over_the_folds(tmp_path, synthetic_root):
    """`python train.py -m data.folds=5 data.fold=0,1,2,3,4` (tiny, one process, the basic launcher)."""
    sweep_dir = tmp_path / "multirun"
    proc = run_script(
        "train.py",
        "-m",
        *TINY,
        f"data.root={synthetic_root}",
        "data.batch_size=64",  # 2 training steps a job
        "data.folds=5",
        "data.fold=0,1,2,3,4",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep_dir}",
        tmp_path=tmp_path,
    )
    records = [json.loads((sweep_dir / str(job) / "run.json").read_text()) for job in range(5)]
    assert [r["status"] for r in records] == ["completed"] * 5
    (group,) = read_csv(sweep_dir / "summary_groups.csv")
    assert (group["varies"], group["folds"], group["completed"]) == ("data.fold", "0 1 2 3 4", "5")
    mean, std, low, high = student_t([r["best_score"] for r in records])
    assert float(group["val_auroc_best_mean"]) == pytest.approx(mean)
    assert float(group["val_auroc_best_std"]) == pytest.approx(std) and std > 0  # five different validation folds
    assert float(group["val_auroc_best_ci95_low"]) == pytest.approx(low)
    assert float(group["val_auroc_best_ci95_high"]) == pytest.approx(high)
    test_mean = student_t([r["test"]["test/auroc"] for r in records])[0]
    assert float(group["test_auroc_mean"]) == pytest.approx(test_mean)
    assert "1 fold group (runs that differ only in data.fold)" in proc.stdout
    assert f"{mean:.4f} ± {std:.4f} [{low:.4f}, {high:.4f}]" in (sweep_dir / "summary.md").read_text()
