"""The typed config schemas (faceattr/config/): what they accept and the one-line errors they give."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import MISSING, OmegaConf

from faceattr.config.check import check_config
from faceattr.config.command_line import check_command_line
from faceattr.config.eval import EvalConfig
from faceattr.config.export import ExportConfig, ExportFormatConfig
from faceattr.config.schemas import CONFIG_DIR, CONFIG_DIRS, SCHEMAS, register_schemas, settings
from faceattr.config.train import TrainConfig
from faceattr.config_checks import check_types
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


def _plain_value(tree: dict, key: str):
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def test_the_yaml_files_give_every_value():
    """The schemas hold types and checks only (every field MISSING); every default comes from conf/<name>.yaml, and
    only the settings a user must give stay ??? there."""
    for name, required in (
        ("export", {"ckpt"}),
        ("eval", {"ckpt"}),
        ("predict", {"model", "images"}),
        ("train", set()),
    ):
        assert {s.field.default for s in settings(SCHEMAS[name]).values()} == {MISSING}, name
        with initialize_config_dir(config_dir=str(CONFIG_DIRS.get(name, CONFIG_DIR)), version_base="1.3"):
            cfg = compose(config_name=name)
        tree = OmegaConf.to_container(cfg, resolve=False)  # train's paths need Hydra's runtime to resolve
        missing = {key for key in settings(SCHEMAS[name]) if _plain_value(tree, key) == "???"}
        assert OmegaConf.get_type(cfg) is SCHEMAS[name] and missing == required, name


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.max_epochs=abc"], "trainer.max_epochs='abc': expected null or an integer >= 1 (or -1: no limit)"),
        (["trainer.max_epochs=2.5"], "trainer.max_epochs=2.5: expected null or an integer >= 1"),
        (["data.batch_size='16'"], "data.batch_size='16': expected an integer"),
        (["optimizer.lr=fast"], "optimizer.lr='fast': expected null or a number >= 0 (0: the weights do not move)"),
        (["optimizer=sgd", "optimizer.momentum=[1]"], "optimizer.momentum=[1]: expected null or a number in [0, 1]"),
        (["model.drop_rate=true"], "model.drop_rate=True: expected null or a number in [0, 1)"),
        (["seed=abc"], "seed='abc': expected null or an integer in [0, 4294967295]"),
        (["test=maybe"], "test='maybe': expected true or false"),
        (["monitor.mode=up"], "monitor.mode='up': expected min or max"),
        (["model=bogus"], "model=bogus: no such option (available: convnext_tiny, efficientnet_b0, resnet10t, "),
        (["data=3"], "data=3: no such option (available: celeba, folder, synthetic)"),
        (["modell=resnet18"], "unknown train option 'modell'; valid: seed, ckpt_path, resume, monitor.metric, "),
        (["+foo=1"], "unknown train option 'foo'; valid:"),
        (["trainer.foo=1"], "unknown train option 'trainer.foo': the chosen trainer config has no such key (+trainer"),
        (["seed"], "cannot parse the argument 'seed' (missing EQUAL at '<EOF>'): arguments are key=value overrides"),
    ],
)
def test_bad_training_values_are_one_line(overrides, message):
    """train.py's command line, as every entry's: Hydra composes onto TrainConfig (its own keys typed there), then
    the groups' knobs are checked (check_types)."""
    assert one_line_error(check_command_line, "train", overrides).startswith(message)


def test_training_composes_onto_its_schema_and_its_groups_stay_free_form():
    register_schemas()
    cfg = compose_config("train", "seed=7", "+trainer.gradient_clip_val=1.0")
    assert OmegaConf.get_type(cfg) is TrainConfig and cfg.seed == 7 and cfg.trainer.gradient_clip_val == 1.0
    assert one_line_error(check_types, compose_config("train", "trainer.max_epochs=abc")) == (
        "trainer.max_epochs='abc': expected null or an integer >= 1 (or -1: no limit)"
    )
    check_command_line("train", ["experiment=quickstart", "trainer.max_epochs=3", "scheduler=none"])
    check_command_line("train", ["-m", "model=tiny_resnet,tiny_vit"])  # sweeps are Hydra's (each job checks itself)


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
    assert (
        one_line_error(check_types, OmegaConf.create(edited))
        == "trainer.max_epochs='three': expected null or an integer >= 1 (or -1: no limit)"
    )


@pytest.mark.parametrize(
    "argument, message",
    [
        ("split=train", "split='train': expected one of test, valid"),
        ("thresholds=often", "thresholds='often': expected a number in [0, 1] (e.g. 0.5) or calibrated"),
        ("thresholds=1.5", "thresholds=1.5: expected a number in [0, 1]"),
        ("data.num_workers=-1", "data.num_workers=-1: expected null or an integer >= 0"),
        ("data.eval_batch_size=many", "data.eval_batch_size='many': expected null or an integer >= 1"),
        ("tensorboard=sometimes", "tensorboard='sometimes': expected true or false"),
        ("groups=Male", "groups='Male': expected null, [] or a list of attribute columns"),
        (
            "data.image_size=64",
            "unknown eval option 'data.image_size'; valid: ckpt, split, thresholds, data.root, "
            "data.num_workers, data.eval_batch_size, groups, output_dir, tensorboard",
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


SERVE_CONF = REPO / "conf" / "serve"
# A valid value of every service setting other than its default, as the variable's text and as read back.
OVERRIDES = {
    "model": ("faceattr:1.10", "faceattr:1.10"),
    "format": ("onnx", "onnx"),
    "precision": ("fp32", "fp32"),
    "runner": ("service", "service"),
    "device": ("cuda:1", "cuda:1"),
    "threshold_mode": ("fixed", "fixed"),
    "threshold": ("0.3", 0.3),
    "max_batch_size": ("64", 64),
    "max_latency_ms": ("800", 800),
    "max_image_bytes": ("1000", 1000),
    "max_image_pixels": ("2000", 2000),
    "max_decode_pixels": ("3000", 3000),
    "max_request_bytes": ("4000", 4000),
    "max_images_per_request": ("3", 3),
    "image_formats": ("jpeg,png", ("JPEG", "PNG")),
    "num_threads": ("2", 2),
    "decode_threads": ("3", 3),
    "api_workers": ("5", 5),
    "model_workers": ("2", 2),
    "timeout_s": ("7.5", 7.5),
    "decimals": ("3", 3),
    "access_log": ("true", True),
    "trace_predictions": ("true", True),
    "face": ("detect", "detect"),
    "no_face": ("center", "center"),
    "face_max_side": ("640", 640),
    "face_min_score": ("0.7", 0.7),
}


def _default_yaml() -> dict:
    return OmegaConf.to_container(OmegaConf.load(SERVE_CONF / "default.yaml"))


def test_every_serve_setting_has_one_default_and_a_variable_that_overrides_it():
    """ServeConfig holds types and checks only; conf/serve/default.yaml gives every value, in the schema's order;
    FACEATTR_SERVE_<KEY> sets each."""
    import dataclasses

    from faceattr.serve.config import FIELDS

    assert set(OVERRIDES) == set(FIELDS)
    assert {(f.default, f.default_factory) for f in FIELDS.values()} == {(dataclasses.MISSING, dataclasses.MISSING)}
    assert list(_default_yaml()) == list(FIELDS)
    default = load_serve_config({})
    as_read = {key: list(value) if isinstance(value, tuple) else value for key, value in vars(default).items()}
    assert {key: as_read[key] for key in FIELDS} == _default_yaml()
    environ = {f"FACEATTR_SERVE_{key.upper()}": text for key, (text, _) in OVERRIDES.items()}
    config = load_serve_config(environ)
    assert {key: getattr(config, key) for key in FIELDS} == {key: value for key, (_, value) in OVERRIDES.items()}
    assert {key for key in FIELDS if getattr(config, key) == getattr(default, key)} == set()  # each one took effect
    assert config.source.endswith("FACEATTR_SERVE_TRACE_PREDICTIONS")


def test_every_serve_setting_has_its_own_comment_in_default_yaml():
    from faceattr.serve.config import FIELDS

    lines = (SERVE_CONF / "default.yaml").read_text().splitlines()
    keys = {line.split(":", 1)[0]: number for number, line in enumerate(lines) if line[:1].isalpha()}
    assert set(keys) == set(FIELDS)
    uncommented = [key for key, number in keys.items() if not lines[number - 1].startswith("# ")]
    assert not uncommented, f"no comment line right above: {uncommented}"


def test_the_settings_table_of_the_docs_gives_default_yaml_values():
    """docs/serving.md's table copies each default: it must stay what conf/serve/default.yaml says."""
    documented = dict(
        re.findall(r"^\| `FACEATTR_SERVE_([A-Z_]+)` \| `([^`]*)` \|", (REPO / "docs/serving.md").read_text(), re.M)
    )
    assert documented.pop("CONFIG") == "default"
    as_written = {
        key.upper(): ",".join(value) if isinstance(value, list) else yaml.safe_dump(value).split("\n")[0]
        for key, value in _default_yaml().items()
    }
    assert documented == as_written


@pytest.mark.parametrize("name", sorted(p.stem for p in SERVE_CONF.glob("*.yaml")))
def test_hydra_composes_each_serve_file_to_the_settings_the_service_reads(name):
    """conf/serve/*.yaml are Hydra configs (a file starts from others with Hydra's defaults list): Hydra's compose
    API gives each one, alone, every setting, and onto ServeConfig it gives what load_serve_config gives."""
    from faceattr.serve.config import FIELDS, ServeConfig

    with initialize_config_dir(config_dir=str(SERVE_CONF), version_base="1.3"):
        composed = compose(config_name=name)
    assert set(composed) == set(FIELDS)  # shipped files list `default`, so Hydra needs no help from the loader
    merged = OmegaConf.merge(OmegaConf.structured(ServeConfig), composed)
    served = load_serve_config({"FACEATTR_SERVE_CONFIG": name})
    assert {key: merged[key] for key in FIELDS if key != "image_formats"} == {
        key: getattr(served, key) for key in FIELDS if key != "image_formats"
    }
    assert tuple(merged.image_formats) == served.image_formats
    if name == "gpu":
        assert (served.device, served.runner, served.max_batch_size, served.format) == ("cuda", "service", 128, "auto")


def test_a_serve_file_of_ones_own_starts_from_default_yaml_and_others(tmp_path):
    import dataclasses

    mine = tmp_path / "mine.yaml"
    mine.write_text("max_batch_size: 64\n")  # no defaults list: default.yaml's values, then this file's
    assert load_serve_config({"FACEATTR_SERVE_CONFIG": str(mine)}) == dataclasses.replace(
        load_serve_config({}), max_batch_size=64
    )
    mine.write_text("defaults: [gpu]\nmax_batch_size: 64\n")
    config = load_serve_config({"FACEATTR_SERVE_CONFIG": str(mine)})
    assert (config.device, config.max_batch_size) == ("cuda", 64)  # gpu.yaml's, then this file's own
    mine.write_text("defaults: [_self_, gpu]\nmax_batch_size: 64\n")  # _self_ first: gpu.yaml's value wins
    assert load_serve_config({"FACEATTR_SERVE_CONFIG": str(mine)}).max_batch_size == 128


def test_the_mistakes_of_a_serve_file_name_it_in_one_line(tmp_path):
    mine = tmp_path / "mine.yaml"
    (tmp_path / "loop.yaml").write_text("defaults: [mine]\n")
    cases = {
        "defaults: [loop]\n": "defaults list leads back to itself",
        "max_batch_size: many\n": f"max_batch_size='many' ({mine}): expected an integer",
        "access_log: null\n": f"access_log=None ({mine}): must not be null",
        "image_formats: JPEG\nthreshold: [1]\n": f"threshold=[1] ({mine}): expected a number",
        "extends: default\n": f"{mine}: unknown setting 'extends'; valid: defaults, model, format",
        "source: mine\n": f"{mine}: unknown setting 'source'",
        "defaults: default\n": f"{mine}: defaults must be a list of names of files beside it",
        "defaults: [nowhere]\n": f"{mine}: defaults names 'nowhere': no conf/serve/nowhere.yaml (available: default",
        "[1, 2]\n": f"{mine}: expected a mapping of settings",
        "max_batch_size: [\n": f"{mine} is not valid YAML",
    }
    for text, message in cases.items():
        mine.write_text(text)
        with pytest.raises(ServeConfigError) as error:
            load_serve_config({"FACEATTR_SERVE_CONFIG": str(mine)})
        assert "\n" not in str(error.value)
        assert str(error.value).startswith(message) or message in str(error.value), (text, str(error.value))


def test_a_default_yaml_without_every_setting_is_refused_in_one_line(tmp_path, monkeypatch):
    import faceattr.serve.config as serve_config

    text = (SERVE_CONF / "default.yaml").read_text()
    (tmp_path / "default.yaml").write_text(text.replace("decimals: 6\n", "").replace("face: auto\n", ""))
    monkeypatch.setattr(serve_config, "conf_dirs", lambda: [tmp_path])
    with pytest.raises(ServeConfigError) as error:
        load_serve_config({})
    assert str(error.value) == f"{tmp_path / 'default.yaml'}: no value for decimals, face (it must set every setting)"


def test_code_running_a_served_model_gets_default_yaml_with_its_changes(monkeypatch):
    from faceattr.serve.config import default_serve_config

    monkeypatch.setenv("FACEATTR_SERVE_MODEL", "other")  # the service's variables are not the caller's settings
    monkeypatch.setenv("FACEATTR_SERVE_CONFIG", "gpu")
    assert default_serve_config() == load_serve_config({})
    config = default_serve_config(model="faceattr:abc", image_formats="jpeg", num_threads=None, threshold=1)
    assert (config.model, config.image_formats, config.num_threads, config.threshold) == (
        "faceattr:abc",
        ("JPEG",),
        None,
        1.0,
    )
    assert config.source.endswith("default.yaml + default_serve_config(model, image_formats, num_threads, threshold)")
    with pytest.raises(ServeConfigError, match=r"^format='tflite' \(.*default_serve_config\(format\)\): expected one"):
        default_serve_config(format="tflite")
    with pytest.raises(ServeConfigError, match=r"^max_batch_size='many' \(default_serve_config\): expected an integer"):
        default_serve_config(max_batch_size="many")
