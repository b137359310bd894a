"""Export: the three ckpt forms, TorchScript/ONNX parity, thresholds, the BentoML store, a torch-only consumer."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, cli_env, run_cli, run_main

from faceattr.attributes import CELEBA_ATTRIBUTES
from faceattr.contract import FORMAT_VERSION, read_contract
from faceattr.errors import UserError
from faceattr.model.metrics import f1_thresholds
from faceattr.run_finder import check_run_config, resolve_checkpoint


def compose_export(*overrides: str):
    """The export config as `python export.py <overrides>` would compose it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="export", overrides=list(overrides))


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """`python export.py ckpt=<run dir> export=onnx` into a fresh BENTOML_HOME: (run dir, tmp, stdout, store dir)."""
    tmp = tmp_path_factory.mktemp("export")
    proc = run_cli("export.py", f"ckpt={tiny_run}", "export=onnx", "calibration.num_workers=0", tmp_path=tmp)
    store = tmp / "bentoml" / "models" / "faceattr"
    return tiny_run, tmp, proc.stdout, store


def _stored_model(store: Path) -> Path:
    versions = [p for p in store.iterdir() if p.is_dir()]
    assert len(versions) == 1, versions
    return versions[0]


@pytest.mark.slow
def test_run_dir_export_writes_both_formats_with_parity_and_metadata(exported):
    run_dir, tmp, stdout, store = exported
    record = json.loads((run_dir / "run.json").read_text())
    assert f"checkpoint:  {record['best_checkpoint']}" in stdout
    assert "from run.json" in stdout
    # Artefacts in the run dir, and the same files in the BentoML store.
    for name in ("model.pt", "model.onnx", "faceattr.json", "config.yaml", "MODEL_CARD.md"):
        assert (run_dir / "export" / name).is_file(), name
    model_dir = _stored_model(store)
    assert (model_dir / "model.pt").read_bytes() == (run_dir / "export" / "model.pt").read_bytes()
    # The model card: in the store's model folder (so in every Bento), the same as beside the artefacts, naming the tag.
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert card == (run_dir / "export" / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# Model card: faceattr:{model_dir.name}\n")
    meta = json.loads((model_dir / "faceattr.json").read_text())
    # The model's contract, read back through the one reader every consumer uses.
    contract = read_contract(meta, "the stored model")
    assert contract.format_version == FORMAT_VERSION
    assert contract.attributes == tuple(CELEBA_ATTRIBUTES)
    assert contract.image_size == (32, 32) and contract.crop == (178, 178)
    assert contract.backbone == "test_resnet" and contract.jpeg_scaling is True  # data.jpeg_scaling: on by default
    assert (contract.input_name, contract.output_name) == ("images", "probabilities")
    assert len(contract.mean) == 3 and len(contract.std) == 3
    assert contract.face_template is not None and len(contract.face_template) == 5
    assert meta["source"]["checkpoint"] == str(Path(record["best_checkpoint"]).resolve())
    assert set(meta["formats"]) == {"torchscript", "onnx"}
    for fmt in ("torchscript", "onnx"):
        parity = meta["parity"][fmt]
        assert parity["max_abs_diff"] <= 1e-4 and "validation images" in parity["images"], parity
    thresholds = contract.threshold_of()
    assert list(thresholds) == list(CELEBA_ATTRIBUTES)
    assert all(0.0 < t < 1.0 for t in thresholds.values())
    assert "F1-optimal" in contract.threshold_method
    # The contract is written once: none of its fields is repeated outside it.
    assert not set(meta) & (set(meta["contract"]) - {"format_version"}), sorted(meta)
    validation, test = meta["metrics"]["validation"], meta["metrics"]["test"]
    assert validation["num_images"] > 0 and "auroc" in validation
    # The calibrated figures on validation are labelled as tuned there; the service's rule is measured on test.
    assert set(validation) >= {"at_0.5", "at_thresholds_tuned_here"} and "at_thresholds" not in validation
    assert test["num_images"] > 0
    assert set(test["at_thresholds"]) == {"acc", "bacc", "f1"} and set(test["at_0.5"]) == {"acc", "bacc", "f1"}
    # Exported = the checkpoint the run tested: its test/* figures are copied.
    assert meta["source"]["run_test_is_this_checkpoint"] is True
    assert meta["metrics"]["run_test"]["test/auroc"] == pytest.approx(record["test"]["test/auroc"])
    # The service's preprocessing of CelebA's aligned images equals training's: same accuracy at 0.5.
    assert test["at_0.5"]["acc"] == pytest.approx(record["test"]["test/acc"], abs=1e-4)
    # The tested positive rates (labels) and the served ones (decisions), per attribute, for drift dashboards.
    assert list(test["positive_rates"]) == list(CELEBA_ATTRIBUTES) == list(test["predicted_positive_rates"])
    per_attribute = record["test_per_attribute"]
    for name in CELEBA_ATTRIBUTES:
        assert test["positive_rates"][name] == pytest.approx(per_attribute[name]["positive_rate"], abs=1e-5), name
        assert 0.0 <= test["predicted_positive_rates"][name] <= 1.0
    # export.calibration=none (the default): no temperature, and the test ECE is the same before and after.
    assert set(contract.temperatures) == {1.0} and not contract.temperature_scaled
    calibration = test["calibration"]
    assert calibration["method"] == "none" and calibration["ece_before"] == calibration["ece_after"]
    assert 0.0 < calibration["ece_after"]["macro"] < 1.0
    # BentoML's own view of the model: `bentoml models list` and the metadata of model.yaml.
    listing = subprocess.run(
        [sys.executable, "-m", "bentoml", "models", "list"],
        env=cli_env(tmp),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"faceattr:{model_dir.name}" in listing
    info = yaml.safe_load((model_dir / "model.yaml").read_text())
    assert read_contract(info["metadata"], "the store's metadata") == contract
    assert "config" in info["metadata"]
    assert info["labels"]["formats"] == "torchscript+onnx"
    # `bentoml models get <tag>` says where the card is: a label and a metadata entry naming the file.
    shown = subprocess.run(
        [sys.executable, "-m", "bentoml", "models", "get", f"faceattr:{model_dir.name}", "-o", "json"],
        env=cli_env(tmp),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shown = json.loads(shown)
    assert shown["labels"]["model_card"] == "MODEL_CARD.md"
    assert shown["metadata"]["model_card"]["file"] == "MODEL_CARD.md"


@pytest.mark.slow
def test_torchscript_runs_in_a_process_that_cannot_import_faceattr(exported, tmp_path):
    """The artefact alone, torch alone: faceattr imports are blocked in the child; outputs match the checkpoint."""
    run_dir, _, _, store = exported
    from faceattr.model.loading import load_module

    model_pt = _stored_model(store) / "model.pt"
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(images, tmp_path / "in.pt")
    script = textwrap.dedent(
        f"""
        import json, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "faceattr" or name.startswith("faceattr."):
                    raise ImportError("faceattr must not be imported here")
        sys.meta_path.insert(0, Block())
        import torch
        extra = {{"faceattr.json": ""}}
        model = torch.jit.load({str(model_pt)!r}, _extra_files=extra)
        out = model(torch.load({str(tmp_path / "in.pt")!r}))
        torch.save(out, {str(tmp_path / "out.pt")!r})
        meta = json.loads(extra["faceattr.json"])
        print(json.dumps({{"shape": list(out.shape), "attributes": len(meta["contract"]["attributes"]),
                          "faceattr_loaded": any(m.startswith("faceattr") for m in sys.modules)}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"shape": [5, 40], "attributes": 40, "faceattr_loaded": False}
    record = json.loads((run_dir / "run.json").read_text())
    module = load_module(Path(record["best_checkpoint"]))
    with torch.no_grad():
        expected = torch.sigmoid(module(images))
    assert (torch.load(tmp_path / "out.pt") - expected).abs().max() <= 1e-5


@pytest.mark.slow
def test_onnx_matches_the_checkpoint_with_onnxruntime(exported):
    import onnxruntime as ort

    from faceattr.model.loading import load_module

    run_dir, _, _, store = exported
    model_dir = _stored_model(store)
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch axis
    module = load_module(Path(json.loads((run_dir / "run.json").read_text())["best_checkpoint"]))
    for n in (1, 7):
        images = np.random.default_rng(n).random((n, 3, 32, 32), dtype=np.float32)
        out = session.run(None, {"images": images})[0]
        assert out.shape == (n, 40)
        with torch.no_grad():
            expected = torch.sigmoid(module(torch.from_numpy(images))).numpy()
        assert np.abs(out - expected).max() <= 1e-4
    meta = json.loads(session.get_modelmeta().custom_metadata_map["faceattr.json"])
    assert read_contract(meta, "model.onnx").attributes == tuple(CELEBA_ATTRIBUTES)


@pytest.mark.slow
def test_checkpoint_file_form(tiny_run, tmp_path):
    from faceattr.export.pipeline import export

    last = tiny_run / "checkpoints" / "last.ckpt"
    cfg = compose_export(f"ckpt={last}", "store=false", f"output_dir={tmp_path}", "calibration.num_workers=0")
    meta = export(cfg)
    assert meta["source"]["checkpoint"] == str(last.resolve())
    assert meta["source"]["picked"] == "checkpoint file given"
    # last.ckpt is not the checkpoint the run tested (its best): the run's test/* figures are not copied.
    assert meta["metrics"]["run_test"] == {} and meta["source"]["run_test_is_this_checkpoint"] is False
    assert meta["metrics"]["test"]["num_images"] > 0
    assert meta["parity"]["torchscript"]["max_abs_diff"] <= 1e-4
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "model.onnx").is_file()  # export=onnx: both
    assert meta["parity"]["onnx"]["max_abs_diff"] <= 1e-4


def _fake_sweep(tiny_run: Path, root: Path, scores: list[float | None]) -> Path:
    """A sweep dir whose jobs are copies of the tiny run with the given best scores (None = a failed job)."""
    sweep = root / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for number, score in enumerate(scores):
        job = sweep / str(number)
        if score is None:
            job.mkdir()
            (job / "run.json").write_text(json.dumps({"status": "failed", "monitor": "val/auroc"}))
            continue
        shutil.copytree(tiny_run, job, ignore=shutil.ignore_patterns("export", "tensorboard"))
        record = json.loads((job / "run.json").read_text())
        record["best_score"] = score
        record["best_checkpoint"] = str(job / "checkpoints" / Path(record["best_checkpoint"]).name)
        (job / "run.json").write_text(json.dumps(record))
    return sweep


@pytest.mark.slow
def test_sweep_dir_form_picks_the_best_job_and_says_why(tiny_run, tmp_path, caplog):
    from faceattr.export.pipeline import export

    caplog.set_level("INFO")
    sweep = _fake_sweep(tiny_run, tmp_path, [0.61, 0.83, None, 0.70])
    resolved = resolve_checkpoint(sweep)
    assert resolved.run_dir == sweep / "1"
    assert "job 1 of 4 has the best val/auroc (max) = 0.8300" in resolved.reason
    assert "2: failed" in resolved.reason and "0: 0.6100" in resolved.reason
    meta = export(compose_export(f"ckpt={sweep}", "export=torchscript", "store=false", "calibration.num_workers=0"))
    assert meta["source"]["checkpoint"].startswith(str((sweep / "1").resolve()))
    assert (sweep / "1" / "export" / "model.pt").is_file()
    assert "job 1 of 4" in caplog.text  # export logs which job it picked, and why


@pytest.mark.slow
def test_run_dir_without_run_json_falls_back_to_checkpoint_state(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "tensorboard"))
    best = json.loads((run / "run.json").read_text())["best_checkpoint"]
    (run / "run.json").unlink()
    resolved = resolve_checkpoint(run)
    assert resolved.checkpoint == run / "checkpoints" / Path(best).name  # relocated into the moved run dir
    assert "ModelCheckpoint state in last.ckpt" in resolved.reason


@pytest.mark.slow
def test_bad_ckpt_arguments_are_one_line_user_errors(tmp_path, tiny_run, capsys):
    with pytest.raises(UserError, match="no such file or directory"):
        resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoints"):
        resolve_checkpoint(tmp_path / "empty")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(UserError, match=r"has no checkpoints .*status: failed"):
        resolve_checkpoint(run)
    assert run_main("export.py", f"ckpt={tmp_path / 'nope'}", tmp_path=tmp_path) == 2  # export.py's main, in process
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: ckpt={tmp_path / 'nope'}: no such file or directory"
    ]


@pytest.mark.slow
def test_mismatched_run_config_is_refused(tiny_run):
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    hparams = {
        "image_size": [32, 32],
        "crop": [178, 178],
        "attributes": list(CELEBA_ATTRIBUTES),
        "backbone": "test_resnet",
    }
    check_run_config(hparams, config, "config.yaml")  # the run's own config matches
    config["data"]["image_size"] = 64
    with pytest.raises(
        UserError,
        match=r"does not match config.yaml \(data.image_size \[64, 64\] vs the "
        r"checkpoint's \[32, 32\]\)",
    ):
        check_run_config(hparams, config, "config.yaml")


def _copy_run(tiny_run: Path, destination: Path) -> Path:
    shutil.copytree(tiny_run, destination, ignore=shutil.ignore_patterns("export", "tensorboard"))
    record = json.loads((destination / "run.json").read_text())
    record["best_checkpoint"] = str(destination / "checkpoints" / Path(record["best_checkpoint"]).name)
    (destination / "run.json").write_text(json.dumps(record))
    return destination


def _one_line_error(status: int, stderr: str) -> str:
    """The single stderr line of a failed run of export.py (exit status 2)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), (status, lines)
    return lines[0]


def _run_script(script: str, *args: str, monkeypatch) -> int:
    """``python <script> <args>`` as ``__main__`` in this process; its exit status (it must exit)."""
    monkeypatch.setattr(sys, "argv", [str(REPO / script), *args])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / script), run_name="__main__")
    return exit_.value.code


@pytest.mark.slow
def test_run_config_that_contradicts_the_checkpoint_is_one_line(tiny_run, tmp_path, capsys):
    """A checkpoint exported with a run config (attributes, image size, backbone) that is not its own."""
    from faceattr.export.pipeline import export

    edits = {
        "attributes": (
            lambda c: c["data"].update(attributes=["Smiling", "Male", "Eyeglasses"]),
            r"data.attributes has 3 attributes, the checkpoint 40, only in the checkpoint: "
            r"5_o_Clock_Shadow, Arched_Eyebrows, Attractive, Bags_Under_Eyes, \.\.\. \(37\)",
        ),
        "image_size": (
            lambda c: c["data"].update(image_size=[64, 64]),
            r"data.image_size \[64, 64\] vs the checkpoint's \[32, 32\]",
        ),
        "backbone": (
            lambda c: c["model"].update(backbone="resnet18"),
            r"model.backbone resnet18 vs the checkpoint's test_resnet",
        ),
    }
    for name, (edit, message) in edits.items():
        run = _copy_run(tiny_run, tmp_path / name)
        config = yaml.safe_load((run / "config.yaml").read_text())
        edit(config)
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        cfg = compose_export(f"ckpt={run}", "store=false", "calibration.num_workers=0")
        with pytest.raises(
            UserError,
            match=rf"the checkpoint does not match {run}/config.yaml \({message}\): it "
            "belongs to another run",
        ) as error:
            export(cfg)
        assert "\n" not in str(error.value)
        assert not (run / "export").exists()
    status = run_main("export.py", f"ckpt={tmp_path / 'backbone'}", tmp_path=tmp_path)  # export.py's main
    line = _one_line_error(status, capsys.readouterr().err)
    assert "model.backbone resnet18 vs the checkpoint's test_resnet" in line


@pytest.mark.slow
def test_data_root_without_the_checkpoints_attributes_is_one_line(tiny_run, synthetic_root, tmp_path):
    from faceattr.export.pipeline import export

    data = tmp_path / "celeba"  # the same images and splits, without the Young column
    data.mkdir()
    (data / "img_align_celeba").symlink_to(synthetic_root / "img_align_celeba")
    shutil.copy(synthetic_root / "list_eval_partition.txt", data)
    lines = (synthetic_root / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[1].split()[-1] == "Young"
    kept = [lines[0]] + [line.rsplit(maxsplit=1)[0] for line in lines[1:]]
    (data / "list_attr_celeba.txt").write_text("\n".join(kept) + "\n")
    cfg = compose_export(
        f"ckpt={tiny_run}",
        f"data_root={data}",
        "store=false",
        f"output_dir={tmp_path / 'out'}",
        "calibration.num_workers=0",
    )
    with pytest.raises(
        UserError,
        match=rf"data_root={data} does not fit the checkpoint: its annotation file has no "
        r"column for 1 of the checkpoint's 40 attributes \(Young\); pass the data "
        "folder the model was trained on",
    ):
        export(cfg)


@pytest.mark.slow
def test_unknown_or_bad_export_options_are_one_line(tiny_run, tmp_path, monkeypatch, capsys):
    from faceattr.export.options import check_command_line

    ckpt = f"ckpt={tiny_run}"
    valid = (
        "valid: ckpt, name, store, output_dir, data_root, test_metrics, groups, parity.num_images, parity.atol, "
        "calibration.max_images, calibration.default_threshold, calibration.batch_size, calibration.num_workers, "
        "quantize.num_images, quantize.max_auroc_drop, export.formats, export.opset, export.calibration, "
        "export.quantize; groups: export=onnx|torchscript"
    )
    cases = {
        "foo=1": f"unknown export option 'foo'; {valid}",
        "+foo=1": "unknown export option 'foo'; valid:",  # '+' adds a key Hydra would accept silently
        "data.image_size=64": "unknown export option 'data.image_size'",  # a training key
        "export.data_root=/data": "unknown export option 'export.data_root'",
        "export=bogus": "export=bogus: no such option (available: onnx, torchscript)",
        "parity.atol=abc": "parity.atol='abc': expected a number >= 0",
        "parity.num_images=0": "parity.num_images=0: expected an integer >= 1",
        "calibration.max_images=-1": "calibration.max_images=-1: expected null or an integer >= 0",
        "calibration.default_threshold=2": "calibration.default_threshold=2: expected a number in [0, 1]",
        "store=maybe": "store='maybe': expected true or false",
        "export.opset=5": "export.opset=5: expected null or an ONNX opset >= 7",
        "export.calibration=platt": "export.calibration='platt': expected none or temperature",
        "export.quantize=int4": "export.quantize='int4': expected none or int8",
        "quantize.num_images=0": "quantize.num_images=0: expected an integer >= 1",
        "groups=Male": "groups='Male': expected null or a list of attribute names, e.g. [Male]",
        "parity=3": "parity=3: parity is a group of settings, set them one by one: parity.num_images=..., "
        "parity.atol=...",
        "~calibration": "export option calibration.max_images is missing",
        "parity": "cannot parse the argument 'parity' (missing EQUAL at '<EOF>'): arguments are key=value",
        "ckpt=[a": "cannot parse the argument 'ckpt=[a'",
    }
    for argument, message in cases.items():
        with pytest.raises(UserError) as error:
            check_command_line([ckpt, argument])
        assert str(error.value).startswith(message), (argument, str(error.value))
        assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="ckpt is required"):
        check_command_line([])
    # Valid command lines pass, and Hydra's own flags are left to Hydra.
    check_command_line([ckpt, "export=onnx", "parity.atol=1e-3", "calibration.max_images=null", "hydra.verbose=true"])
    check_command_line([ckpt, "--cfg", "job"])
    # End to end: one line and exit status 2, before anything slow (the checkpoint is not even looked at).
    for argument, message in (
        ("foo=1", "error: unknown export option 'foo'"),
        ("export=bogus", "error: export=bogus: no such option"),
        ("parity.atol=abc", "error: parity.atol='abc'"),
    ):
        status = _run_script("export.py", "ckpt=/nowhere", argument, monkeypatch=monkeypatch)
        err = capsys.readouterr().err
        assert _one_line_error(status, err).startswith(message), err


class _Evil:
    """Unpickling this runs ``touch <marker>``: a checkpoint that executes code when loaded unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_files_that_are_not_faceattr_checkpoints_are_one_line(tiny_run, tmp_path, capsys):
    from faceattr.model.loading import load_module

    state = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    torch.save(state["state_dict"], tmp_path / "bare.ckpt")
    torch.save({**state, "hyper_parameters": {"lr": 0.1}}, tmp_path / "other_model.ckpt")
    head = {**state["hyper_parameters"], "attributes": ["Smiling", "Male", "Eyeglasses"]}
    torch.save({**state, "hyper_parameters": head}, tmp_path / "other_head.ckpt")
    cases = {
        "text": "is not a PyTorch checkpoint (torch.save writes a zip archive; this file is not one)",
        "empty": "is not a PyTorch checkpoint",
        "bare": f"is a bare state_dict ({len(state['state_dict'])} tensors), not a Lightning checkpoint",
        "other_model": "is a Lightning checkpoint of another model (its hyper_parameters lack backbone, attributes, "
        "image_size)",
        "other_head": "its weights do not fit a test_resnet with 3 attributes (",
    }
    for name, message in cases.items():
        with pytest.raises(UserError) as error:
            load_module(tmp_path / f"{name}.ckpt")
        assert message in str(error.value) and "\n" not in str(error.value), (name, str(error.value))
    status = run_main("export.py", f"ckpt={tmp_path / 'bare.ckpt'}", tmp_path=tmp_path)  # export.py's main
    line = _one_line_error(status, capsys.readouterr().err)
    assert "is a bare state_dict" in line


@pytest.mark.slow
def test_malicious_checkpoint_is_refused_without_running_its_code(tiny_run, tmp_path, monkeypatch):
    """A checkpoint carrying a pickled os.system call: loading it with weights_only=False runs the command; export
    refuses it and the command never runs, even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (torch's switch that makes
    every torch.load without an explicit weights_only unsafe)."""
    from faceattr.export.pipeline import export

    marker = tmp_path / "code_ran"
    state = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    evil = tmp_path / "evil.ckpt"
    torch.save({**state, "hyper_parameters": {**state["hyper_parameters"], "note": _Evil(marker)}}, evil)
    unsafe = subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(evil)!r}, weights_only=False)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unsafe.returncode == 0 and marker.exists(), "the checkpoint runs no code: the test would prove nothing"
    marker.unlink()

    env = {**cli_env(tmp_path), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "export.py"), f"ckpt={evil}", "store=false"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = _one_line_error(proc.returncode, proc.stderr)  # export.py itself, in its own process
    assert line == (
        f"error: refusing to load {evil}: it holds a pickled posix.system, which weights_only loading "
        "does not allow (loading it unsafely could run code); faceattr checkpoints hold only tensors and "
        "plain values"
    )
    assert not marker.exists()

    # As the last.ckpt of a run dir without run.json: its ModelCheckpoint state is read first, then the model.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(evil, run / "checkpoints" / "last.ckpt")
    with pytest.raises(UserError, match="refusing to load .*last.ckpt: it holds a pickled posix.system"):
        export(compose_export(f"ckpt={run}", "store=false", "calibration.num_workers=0"))
    assert not marker.exists()


@pytest.mark.slow
def test_parity_failure_fails_loudly_and_stores_nothing(tiny_run, tmp_path, monkeypatch):
    from faceattr.export import build
    from faceattr.export.pipeline import export

    real = build.probability_model

    class Skewed(torch.nn.Module):  # an artefact 1% off the Lightning model
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.inner(images) * 0.99

    monkeypatch.setattr(
        build, "probability_model", lambda module, temperatures: Skewed(real(module, temperatures)).eval()
    )
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    cfg = compose_export(
        f"ckpt={tiny_run}", "export=torchscript", f"output_dir={tmp_path}", "calibration.num_workers=0"
    )
    with pytest.raises(UserError, match="parity check failed for torchscript: .* NOT saved to the model store"):
        export(cfg)
    assert not (tmp_path / "bentoml" / "models").exists()


def test_thresholds_maximize_f1_and_default_where_undefined():
    probs = torch.tensor([[0.9, 0.2], [0.8, 0.3], [0.4, 0.1], [0.3, 0.6], [0.1, 0.7]])
    labels = torch.tensor([[1, 0], [1, 0], [0, 0], [1, 0], [0, 0]], dtype=torch.uint8)
    thresholds, calibrated = f1_thresholds(probs, labels, default=0.5)
    # Attribute 0: top-2 (P=2/2, R=2/3, F1=0.8) vs top-4 (F1=0.857): the best cut is between 0.3 and 0.1.
    assert thresholds[0].item() == pytest.approx(0.2)
    assert calibrated.tolist() == [True, False] and thresholds[1].item() == 0.5
