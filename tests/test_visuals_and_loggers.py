"""Pictures in TensorBoard, the MLflow logger, and the debug presets, in process with tiny settings.

One quickstart-style run (``experiment=quickstart`` on the generated faces, shrunk to the tiny model) trains with
``logger=[tensorboard,mlflow]`` and the pictures callback on; TensorBoard's own event loader and MLflow's own
client then read back what it wrote.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import lightning as L
import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.profilers import PyTorchProfiler

from faceattr.errors import exit_on_user_error
from faceattr.hparams import flat_hparams
from faceattr.training import resolve_trainer_config, train
from faceattr.visuals import MISSED, RIGHT, WRONG, face_lines


def compose_train(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])


def test_face_captions_show_right_wrong_and_missed_attributes():
    attributes = ["Smiling", "Male", "Bangs", "Eyeglasses"]
    lines = face_lines([0.9, 0.7, 0.2, 0.1], [1, 0, 1, 0], attributes, top_k=3)
    assert lines == [
        ("2 of 4 wrong", WRONG),
        ("Smiling 0.90", RIGHT),
        ("Male 0.70", WRONG),
        ("missed Bangs 0.20", MISSED),
    ]
    assert face_lines([0.9, 0.1, 0.1, 0.1], [1, 0, 0, 0], attributes, top_k=1)[0] == ("all 4 right", RIGHT)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory, synthetic_root):
    """A 2-epoch quickstart run on the tiny model with pictures, TensorBoard and (when installed) MLflow:
    (run dir, cfg, MLflow store)."""
    tmp = tmp_path_factory.mktemp("quickstart")
    loggers = (
        ["logger=[tensorboard,mlflow]", f"logger.mlflow.store={tmp / 'mlruns'}"]
        if importlib.util.find_spec("mlflow")
        else ["logger=tensorboard"]
    )
    cfg = compose_train(
        tmp / "run",
        "experiment=quickstart",
        f"data.root={synthetic_root}",
        "data.synthetic.num_images=160",
        "model=tiny_resnet",
        "data.image_size=32",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer.max_epochs=2",
        "callbacks.progress_bar=null",
        "callbacks.pictures.faces=8",
        *loggers,
    )
    result = train(cfg)
    return result.output_dir, cfg, tmp / "mlruns"


def test_quickstart_pictures_reach_tensorboard(quickstart_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, cfg, _ = quickstart_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    images = events.Tags()["images"]
    assert {"val/faces", "test/per_attribute"} <= set(images)
    assert len(events.Images("val/faces")) == 2  # every epoch
    faces = events.Images("val/faces")[-1]
    chart = events.Images("test/per_attribute")[0]
    assert faces.width > 300 and faces.height > 200 and chart.height > chart.width  # 40 attributes, one bar pair each
    pr_curves = events.PluginTagToContent("pr_curves")
    attributes = [f"val/pr_curve/{name}" for name in ("Smiling", "Male", "Eyeglasses", "Wearing_Hat")]
    assert set(attributes) <= set(pr_curves) and len(pr_curves) == 40
    # The PR-curve plugin's tensor: rows TP, FP, TN, FN, precision, recall over 127 thresholds.
    curve = events.Tensors("val/pr_curve/Male")[-1]
    assert [d.size for d in curve.tensor_proto.tensor_shape.dim] == [6, 127]
    _, record = _hparams_record(run_dir / "tensorboard")  # written by training, after the logger was finalized
    assert record["_hparams_/session_start_info"].session_start_info.hparams["model.backbone"].string_value


def test_mlflow_client_reads_back_params_and_metrics(quickstart_run):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[mlflow]'")
    from mlflow.tracking import MlflowClient

    run_dir, cfg, store = quickstart_run
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faceattr").experiment_id])
    assert len(runs) == 1
    run = client.get_run(runs[0].info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["run_dir"] == str(run_dir.resolve())
    expected = {key: str(value) for key, value in flat_hparams(cfg).items()}
    assert expected.items() <= run.data.params.items()
    assert run.data.params["model.backbone"] == "test_resnet" and run.data.params["backbone"] == "test_resnet"
    assert {"val/auroc", "val/auroc_best", "val/loss", "test/auroc", "test/acc"} <= set(run.data.metrics)
    history = client.get_metric_history(run.info.run_id, "val/auroc")
    assert len(history) == 2 and 0.0 <= history[-1].value <= 1.0


def test_logger_mlflow_without_mlflow_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    cfg = compose_train(tmp_path, "logger=mlflow", f"logger.mlflow.store={tmp_path / 'mlruns'}")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(lambda: instantiate(cfg.logger.mlflow))()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == 'error: logger=mlflow needs the mlflow package: pip install -e ".[mlflow]"\n'
    assert not (tmp_path / "mlruns").exists()


def debug_trainer(tmp_path: Path, debug: str, **kwargs) -> L.Trainer:
    cfg = compose_train(tmp_path, f"debug={debug}", "trainer=cpu")
    return instantiate(resolve_trainer_config(cfg.trainer), **{"logger": False, "enable_progress_bar": False, **kwargs})


def test_debug_presets_compose_and_instantiate(tmp_path):
    limit = debug_trainer(tmp_path, "limit")
    assert (limit.limit_train_batches, limit.limit_val_batches, limit.limit_test_batches) == (5, 2, 2)
    assert limit.accumulate_grad_batches == 1  # conf/trainer/default.yaml
    assert debug_trainer(tmp_path, "anomaly")._detect_anomaly
    profiled = debug_trainer(tmp_path, "profiler")
    assert isinstance(profiled.profiler, PyTorchProfiler) and profiled.limit_train_batches == 20


def test_profiler_preset_writes_a_trace_beside_the_tensorboard_events(tmp_path):
    from test_model import loader, make_module

    trainer = debug_trainer(
        tmp_path,
        "profiler",
        logger=TensorBoardLogger(tmp_path / "tensorboard", name="", version=""),
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(make_module(), train_dataloaders=loader(), val_dataloaders=loader(16))
    assert list((tmp_path / "tensorboard").glob("*.pt.trace.json"))
    assert list((tmp_path / "tensorboard").glob("*profile*.txt"))


def _hparams_record(folder: Path):
    """The HParams plugin's three records in ``folder``'s event files, read back by TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventAccumulator(str(folder))
    events.Reload()
    tags = events.PluginTagToContent("hparams")
    return events, {tag: HParamsPluginData.FromString(content) for tag, content in tags.items()}


def test_the_hparams_record_is_written_after_the_logger_was_finalized(tmp_path):
    from faceattr.hparams import HPARAM_METRICS, log_hparams_with_metrics

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="")
    logger.log_metrics({"val/auroc": 0.75}, step=1)
    logger.finalize("success")  # as the Trainer does after fit and test
    log_hparams_with_metrics([logger], {"model.backbone": "tiny_resnet", "optimizer.lr": 0.01})
    events, record = _hparams_record(Path(logger.log_dir))
    assert set(record) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    chosen = record["_hparams_/session_start_info"].session_start_info.hparams
    assert (chosen["model.backbone"].string_value, chosen["optimizer.lr"].number_value) == ("tiny_resnet", 0.01)
    metrics = [info.name.tag for info in record["_hparams_/experiment"].experiment.metric_infos]
    assert metrics == list(HPARAM_METRICS)
    assert events.Tags()["scalars"] == ["val/auroc"]  # the metrics are the logged scalars, with no second copy
    assert len(list(Path(logger.log_dir).glob("events.out.tfevents.*"))) == 2  # the logger's, and the record's
