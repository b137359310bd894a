"""The typed config schemas (faceattr/config_schema.py): what they accept and the one-line errors they give."""

from __future__ import annotations

import pytest
from conftest import REPO, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from faceattr.config_checks import check_types
from faceattr.config_schema import (
    EvalConfig,
    ExportConfig,
    ExportFormatConfig,
    check_command_line,
    check_config,
    register_schemas,
)
from faceattr.errors import UserError
from faceattr.serve.config import ServeConfigError, load_serve_config


def compose_config(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def one_line_error(call, *args) -> str:
    with pytest.raises(UserError) as error:
        call(*args)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_export_and_eval_compose_onto_their_schemas():
    register_schemas()  # again: registering is idempotent
    cfg = compose_config("export", "ckpt=run", "parity.atol=1", "export=torchscript")
    assert OmegaConf.get_type(cfg) is ExportConfig and OmegaConf.get_type(cfg.export) is ExportFormatConfig
    assert cfg.parity.atol == 1.0 and isinstance(cfg.parity.atol, float)  # converted to the field's type
    assert list(cfg.export.formats) == ["torchscript"]
    check_config(cfg, "export")
    cfg = compose_config("eval", "ckpt=run", "thresholds=calibrated", "data.num_workers=0")
    assert OmegaConf.get_type(cfg) is EvalConfig and cfg.data.num_workers == 0
    check_config(cfg, "eval")


def test_the_yaml_files_give_every_value():
    """The schemas hold types and checks only; every default comes from conf/<name>.yaml."""
    for name in ("export", "eval"):
        cfg = compose_config(name, "ckpt=run")
        assert OmegaConf.missing_keys(cfg) == set(), name


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.max_epochs=abc"], "trainer.max_epochs='abc': expected an integer"),
        (["trainer.max_epochs=2.5"], "trainer.max_epochs=2.5: expected an integer"),
        (["data.batch_size='16'"], "data.batch_size='16': expected an integer"),
        (["optimizer.lr=fast"], "optimizer.lr='fast': expected a number"),
        (["optimizer=sgd", "optimizer.momentum=[1]"], "optimizer.momentum=[1]: expected a number"),
        (["model.drop_rate=true"], "model.drop_rate=True: expected a number"),
        (["seed=abc"], "seed='abc': expected an integer"),
        (["test=maybe"], "test='maybe': expected true or false"),
        (["monitor.mode=up"], "monitor.mode='up': expected min or max"),
    ],
)
def test_bad_training_values_are_one_line(overrides, message):
    cfg = compose_config("train", *overrides)
    assert one_line_error(check_types, cfg) == message


def test_free_form_training_groups_take_any_constructor_argument():
    cfg = compose_config(
        "train",
        "+trainer.gradient_clip_algorithm=value",
        "trainer.max_epochs=null",
        "model.backbone=resnet10t",
        "+data.extra=1",
    )
    check_types(cfg)


def test_a_resumed_config_is_checked_the_same_way(tmp_path):
    """resume=<run dir> reads the run's config.yaml with OmegaConf, not Hydra: the same check applies."""
    saved = OmegaConf.to_yaml(compose_config("train", "trainer.max_epochs=3"), resolve=False)
    check_types(OmegaConf.create(saved))
    edited = saved.replace("max_epochs: 3", "max_epochs: three")
    assert one_line_error(check_types, OmegaConf.create(edited)) == "trainer.max_epochs='three': expected an integer"


@pytest.mark.parametrize(
    "argument, message",
    [
        ("split=train", "split='train': expected one of test, valid"),
        ("thresholds=often", "thresholds='often': expected a number in [0, 1] (e.g. 0.5) or calibrated"),
        ("thresholds=1.5", "thresholds=1.5: expected a number in [0, 1]"),
        ("data.num_workers=-1", "data.num_workers=-1: expected null or an integer >= 0"),
        ("data.eval_batch_size=many", "data.eval_batch_size='many': expected null or an integer >= 1"),
        ("tensorboard=sometimes", "tensorboard='sometimes': expected true or false"),
        (
            "data.image_size=64",
            "unknown eval option 'data.image_size'; valid: ckpt, split, thresholds, data.root, "
            "data.num_workers, data.eval_batch_size, output_dir, tensorboard",
        ),
        ("+foo=1", "unknown eval option 'foo'"),
        (
            "data=3",
            "data=3: data is a group of settings, set them one by one: data.root=..., data.num_workers=..., "
            "data.eval_batch_size=...",
        ),
    ],
)
def test_bad_eval_options_are_one_line(argument, message):
    assert one_line_error(check_command_line, "eval", ["ckpt=run", argument]).startswith(message)


def test_command_lines_that_pass():
    check_command_line("eval", ["ckpt=run", "split=valid", "thresholds=calibrated", "data.root=/data"])
    check_command_line("eval", ["ckpt=run", "thresholds=0.3", "data.num_workers=null"])
    check_command_line("eval", ["--help"])  # Hydra's own flags are left to Hydra
    assert one_line_error(check_command_line, "eval", []) == (
        "ckpt is required: python eval.py ckpt=... (expected a .ckpt file, run dir or sweep dir)"
    )


def test_eval_cli_refuses_a_bad_option_in_one_line_before_hydra(tmp_path):
    proc = run_cli("eval.py", "ckpt=/nowhere", "thresholds=often", tmp_path=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: thresholds='often': expected a number in [0, 1] (e.g. 0.5) or calibrated"
    ]


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("DEVICE", "tpu", r"device='tpu' \(.*FACEATTR_SERVE_DEVICE\): expected auto, cpu, cuda or cuda:N"),
        ("FORMAT", "tflite", "format='tflite' .*: expected one of auto, torchscript, onnx"),
        ("MAX_BATCH_SIZE", "1", "max_batch_size=1 .*: BentoML needs at least 2"),
        ("MAX_LATENCY_MS", "0", "max_latency_ms=0 .*: must be at least 1"),
        ("THRESHOLD", "1.5", r"threshold=1.5 .*: expected a probability in \[0, 1\]"),
        ("TIMEOUT_S", "0", "timeout_s=0.0 .*: must be positive"),
        ("NUM_THREADS", "abc", "num_threads='abc' .*: expected an integer"),
    ],
)
def test_serve_settings_use_their_fields_checks(variable, value, message):
    with pytest.raises(ServeConfigError, match=message):
        load_serve_config({f"FACEATTR_SERVE_{variable}": value})
