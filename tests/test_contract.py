"""The model's contract (faceattr/contract.py): built from a model's hyper-parameters, written as JSON, read back by
the one reader, and refused in one line when it is absent (an older export) or of another version."""

from __future__ import annotations

import json

import pytest

from faceattr.contract import CONTRACT_KEY, FORMAT_VERSION, ContractError, Int8Figures, ModelContract, read_contract
from faceattr.preprocess import RULE_VERSION
from faceattr.serve.runtime import ModelError, read_model_info

ATTRS = ("Smiling", "Male", "Eyeglasses")
HPARAMS = {
    "backbone": "test_resnet",
    "attributes": list(ATTRS),
    "image_size": [32, 40],
    "crop": [178, 178],
    "jpeg_scaling": True,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "preprocess_rule": RULE_VERSION,
    "drop_rate": 0.1,  # a training knob: not part of the contract
}


def _calibrated() -> ModelContract:
    points = [(70.0, 112.0), (108.0, 112.0), (89.0, 134.0), (72.0, 152.0), (106.0, 152.0)]
    contract = ModelContract.from_hparams(HPARAMS)
    return contract.with_thresholds([0.3, 0.55, 0.5], [True, True, False], "F1-optimal").with_face_template(
        points, "landmark file"
    )


def test_from_hparams_takes_the_model_fields_and_uncalibrated_thresholds():
    contract = ModelContract.from_hparams(HPARAMS)
    assert contract.attributes == ATTRS and contract.image_size == (32, 40) and contract.crop == (178, 178)
    assert contract.jpeg_scaling is True and contract.mean == (0.5, 0.5, 0.5) and contract.std == (0.25,) * 3
    assert contract.thresholds == (0.5, 0.5, 0.5) and contract.uncalibrated_attributes == ATTRS
    assert contract.face_template is None and contract.format_version == FORMAT_VERSION


def test_json_round_trip_is_exact_and_plain_json():
    contract = _calibrated()
    data = json.loads(json.dumps(contract.to_json()))
    assert data["thresholds"] == {"Smiling": 0.3, "Male": 0.55, "Eyeglasses": 0.5}
    assert data["uncalibrated_attributes"] == ["Eyeglasses"]
    back = read_contract({CONTRACT_KEY: data}, "model m")
    assert back == contract
    assert back.threshold_of()["Male"] == 0.55 and back.calibrated == (True, True, False)


def _int8(changes=(0.01, -0.02, 0.0)) -> Int8Figures:
    return Int8Figures(
        artefact="model.int8.onnx",
        calibration_images=256,
        test_images=1000,
        auroc_fp32=0.91,
        auroc_int8=0.905,
        auroc_drop=0.005,
        acc_fp32=0.88,
        acc_int8=0.879,
        acc_change=tuple(changes),
        max_abs_delta_p=0.03,
    )


def test_int8_figures_round_trip_by_attribute_name_and_older_versions_read_without_them():
    contract = _calibrated().with_int8(_int8())
    data = json.loads(json.dumps(contract.to_json()))
    assert data["format_version"] == FORMAT_VERSION == 4
    assert data["int8"]["acc_change"] == {"Smiling": 0.01, "Male": -0.02, "Eyeglasses": 0.0}
    assert read_contract({CONTRACT_KEY: data}, "model m") == contract
    assert read_contract({CONTRACT_KEY: data}, "model m").int8.auroc_drop == 0.005
    for version in (2, 3):  # written before int8 existed: no "int8" key
        older = {k: v for k, v in _calibrated().to_json().items() if k != "int8"}
        assert read_contract({CONTRACT_KEY: {**older, "format_version": version}}, "model m").int8 is None
    with pytest.raises(ContractError, match="int8 accuracy changes for 2 of 3 attributes"):
        _calibrated().with_int8(_int8((0.0, 0.0)))


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"attributes": list(ATTRS), "image_size": [32, 32]}, "was exported by an older faceattr"),
        ({CONTRACT_KEY: {**_calibrated().to_json(), "format_version": 99}}, "format_version 99"),
        ({CONTRACT_KEY: {k: v for k, v in _calibrated().to_json().items() if k != "image_size"}}, "'image_size'"),
        ({CONTRACT_KEY: {**_calibrated().to_json(), "thresholds": {"Bald": 0.4}}}, "does not have: Bald"),
        ({CONTRACT_KEY: {**_calibrated().to_json(), "std": [1, 0, 1]}}, "std > 0"),
        ({CONTRACT_KEY: {**_calibrated().to_json(), "preprocess_rule": 1}}, "version 1 of the image rule"),
    ],
)
def test_unreadable_contracts_are_one_line_saying_to_export_again(metadata, message):
    with pytest.raises(ContractError) as error:
        read_contract(metadata, "model m:v1")
    text = str(error.value)
    assert message in text and text.startswith("model m:v1") and "\n" not in text
    assert "python export.py ckpt=" in text


def test_an_export_from_before_the_contract_is_refused_by_the_service_reader(tmp_path):
    """A faceattr.json as exports wrote it before the typed contract: the service refuses it in one line."""
    old = {"attributes": list(ATTRS), "image_size": [32, 32], "crop": [178, 178], "thresholds": {}, "formats": {}}
    (tmp_path / "faceattr.json").write_text(json.dumps(old))
    with pytest.raises(ModelError, match=r"^model faceattr:old was exported by an older faceattr .* export it again"):
        read_model_info(tmp_path, "faceattr:old")
    (tmp_path / "faceattr.json").write_text(json.dumps({CONTRACT_KEY: _calibrated().to_json(), "formats": {}}))
    info = read_model_info(tmp_path, "faceattr:new")
    assert info.contract == _calibrated() and info.image_size == (32, 40) and info.jpeg_scaling is True
    assert info.face_template == _calibrated().face_template


def test_a_contract_checks_its_own_consistency():
    with pytest.raises(ContractError, match="repeat"):
        ModelContract.from_hparams({**HPARAMS, "attributes": ["Male", "Male"]})
    with pytest.raises(ContractError, match="3 thresholds / 3 calibration flags for 2 attributes"):
        ModelContract.from_hparams({**HPARAMS, "attributes": ["Male", "Smiling"]}).with_thresholds(
            [0.5] * 3, [True] * 3, "x"
        )


def test_a_checkpoint_that_does_not_record_its_image_rule_gets_the_first_one(tmp_path):
    """Checkpoints from before the image rule was recorded: their contract says rule 1, so serving refuses them
    instead of feeding them the current rule's pixels; a model trained now records the current rule."""
    import torch

    from faceattr.model import FaceAttrModule
    from faceattr.model.loading import load_module

    model = FaceAttrModule("test_resnet", ATTRS, image_size=32, crop=178)
    assert model.contract.preprocess_rule == RULE_VERSION
    hparams = {k: v for k, v in dict(model.hparams).items() if k != "preprocess_rule"}
    path = tmp_path / "old.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": "2.6.0"}, path
    )
    loaded = load_module(path)
    assert loaded.contract.preprocess_rule == 1
    assert loaded.contract == ModelContract.from_hparams({**hparams, "preprocess_rule": 1})


def test_an_export_listing_its_artefacts_wrongly_is_one_line(tmp_path):
    (tmp_path / "faceattr.json").write_text(json.dumps({CONTRACT_KEY: _calibrated().to_json(), "formats": ["onnx"]}))
    with pytest.raises(ModelError, match=r"^model m: faceattr.json lists its artefacts wrongly \(\['onnx'\]\)"):
        read_model_info(tmp_path, "m")
