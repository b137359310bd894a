"""The LightningModule: forward/backward, metric names and values, self-describing checkpoints, weights errors."""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import timm
import torch
from torch.utils.data import DataLoader, Dataset

from faceattr.attributes import UNKNOWN_LABEL
from faceattr.best_metric import BestMetric
from faceattr.errors import UserError
from faceattr.model import FaceAttrModule
from faceattr.model.metrics import AttributeAUROC

ATTRS = ["Smiling", "Male", "Eyeglasses"]


def make_module(**kwargs) -> FaceAttrModule:
    kwargs.setdefault("optimizer", functools.partial(torch.optim.AdamW, lr=1e-2))
    return FaceAttrModule(backbone="test_resnet", attributes=ATTRS, image_size=32, **kwargs)


class Separable(Dataset):
    """Attribute k is on when channel k is bright: learnable in a few steps. ``unknown``: the fraction of labels
    stored as UNKNOWN_LABEL (the image still shows the attribute or not)."""

    def __init__(self, n: int = 64, attributes: int = 3, unknown: float = 0.0) -> None:
        g = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, 2, (n, attributes), generator=g, dtype=torch.uint8)
        noise = torch.randint(0, 60, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        bright = torch.zeros(n, 3, 1, 1, dtype=torch.uint8)
        bright[:, :attributes] = self.labels.view(n, attributes, 1, 1)
        self.images = noise + bright * 180
        if unknown:
            self.labels[torch.rand(n, attributes, generator=g) < unknown] = UNKNOWN_LABEL

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def loader(n: int = 64, attributes: int = 3, unknown: float = 0.0) -> DataLoader:
    def collate(items):
        return torch.stack([i for i, _ in items]), torch.stack([lbl for _, lbl in items]), 0

    return DataLoader(Separable(n, attributes, unknown), batch_size=16, collate_fn=collate)


def fit_one_epoch_and_save(module: FaceAttrModule, path):
    """One epoch on the separable data, then ``trainer.save_checkpoint(path)``; returns ``path``."""
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=path.parent,
    )
    trainer.fit(module, train_dataloaders=loader(16), val_dataloaders=loader(16))
    trainer.save_checkpoint(path)
    return path


def test_forward_backward_shapes_and_gradients():
    module = make_module()
    images = torch.rand(4, 3, 32, 32, requires_grad=True)
    logits = module(images)
    assert logits.shape == (4, 3)
    logits.sum().backward()
    assert images.grad is not None and all(p.grad is not None for p in module.net.parameters() if p.requires_grad)


class EpochValues(L.Callback):
    """The logged ``val/auroc`` and ``val/auroc_best`` of each epoch (after the epoch's metrics are collected)."""

    def __init__(self) -> None:
        self.values: list[tuple[float, float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch:
            self.values.append(tuple(float(trainer.logged_metrics[k]) for k in ("val/auroc", "val/auroc_best")))

    def on_train_end(self, trainer, pl_module) -> None:
        self.on_train_epoch_start(trainer, pl_module)


def test_training_logs_the_agreed_metric_names_and_learns(tmp_path):
    module = make_module()
    epochs = EpochValues()
    trainer = L.Trainer(
        max_epochs=6,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[BestMetric("val/auroc"), epochs],  # as train() adds it: val/auroc_best
    )
    trainer.fit(module, train_dataloaders=loader(), val_dataloaders=loader(32))
    fit_metrics = dict(trainer.logged_metrics)
    expected = {"train/loss_epoch", "val/loss", "val/auroc", "val/acc", "val/f1", "val/auroc_best"}
    assert expected | {f"val/auroc/{a}" for a in ATTRS} <= set(fit_metrics)
    aurocs = [auroc for auroc, _ in epochs.values]
    assert len(aurocs) == 6 and [best for _, best in epochs.values] == pytest.approx(
        [max(aurocs[: i + 1]) for i in range(6)], abs=1e-6
    )  # every epoch: the best so far, that epoch's included
    trainer.test(module, dataloaders=loader(32), verbose=False)
    expected = {"test/loss", "test/auroc", "test/acc", "test/f1"} | {f"test/auroc/{a}" for a in ATTRS}
    assert expected <= set(trainer.logged_metrics)
    assert float(trainer.logged_metrics["test/auroc"]) > 0.9


def test_checkpoint_rebuilds_the_model_alone(tmp_path):
    module = make_module(crop=178)
    path = fit_one_epoch_and_save(module, tmp_path / "m.ckpt")
    hparams = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["attributes"] == ATTRS and hparams["image_size"] == [32, 32] and hparams["crop"] == [178, 178]
    assert hparams["backbone"] == "test_resnet" and len(hparams["mean"]) == 3
    restored = FaceAttrModule.load_from_checkpoint(path, map_location="cpu")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(restored.eval()(x), module.eval()(x))


def test_auroc_is_nan_not_zero_for_a_one_class_attribute():
    metric = AttributeAUROC(num_labels=2)
    metric.update(torch.tensor([[0.9, 0.2], [0.1, 0.7], [0.8, 0.4]]), torch.tensor([[1, 0], [0, 0], [1, 0]]))
    first, second = metric.compute().tolist()
    assert first == 1.0 and math.isnan(second)


def test_pos_weight_comes_from_training_rates():
    module = make_module(pos_weight=True)

    class FakeDM:
        train_positive_rate = torch.tensor([0.5, 0.2, 0.1])

    class FakeTrainer:
        datamodule = FakeDM()

    module._trainer = FakeTrainer()
    module.setup("fit")
    torch.testing.assert_close(module.pos_weight, torch.tensor([1.0, 4.0, 9.0]))


def test_local_weights_file_is_loaded(tmp_path):
    source = timm.create_model("test_resnet", num_classes=1000)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    module = make_module(weights=str(path))
    torch.testing.assert_close(next(module.net.parameters()), next(source.parameters()))
    assert module.net.get_classifier().out_features == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weights": "/nowhere/w.pth"}, "no such file"),
        ({"pretrained": True}, "model.pretrained=false"),
    ],
)
def test_weights_errors_are_one_clear_line(kwargs, message, monkeypatch):
    import huggingface_hub.constants

    # Offline mode, as on a machine without network (hub retries would otherwise take ~45 s here).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match=message) as info:
        make_module(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_backbone_is_a_user_error():
    with pytest.raises(UserError, match="not a timm model name"):
        FaceAttrModule(backbone="no_such_net", attributes=ATTRS)


# --- Trustworthy numbers: metric definitions and the defects each test below guards against. ---


def test_macro_metrics_match_torchmetrics_and_balanced_accuracy_by_hand():
    from torchmetrics.classification import MultilabelAccuracy, MultilabelF1Score

    from faceattr.model.metrics import AttributeMetrics, macro

    g = torch.Generator().manual_seed(0)
    probs, labels = torch.rand(200, 5, generator=g), torch.randint(0, 2, (200, 5), generator=g)
    labels[:, 4] = 0  # one attribute with no positive at all
    metrics = AttributeMetrics(5)
    metrics.update(probs[:120], labels[:120])
    metrics.update(probs[120:], labels[120:])
    values = metrics.compute()
    reference_acc = MultilabelAccuracy(num_labels=5, average="macro")(probs, labels)
    reference_f1 = MultilabelF1Score(num_labels=5, average="macro")(probs, labels)
    assert float(macro(values["acc"])) == pytest.approx(float(reference_acc), abs=1e-6)
    assert float(macro(values["f1"])) == pytest.approx(float(reference_f1), abs=1e-6)
    predicted = probs >= 0.5
    truth = labels.bool()
    tpr = (predicted & truth).sum(0) / truth.sum(0).clamp(min=1)
    tnr = (~predicted & ~truth).sum(0) / (~truth).sum(0)
    torch.testing.assert_close(values["bacc"][:4].float(), ((tpr + tnr) / 2)[:4].float())
    assert float(values["bacc"][4]) == pytest.approx(float(tnr[4]))  # one class: the defined rate
    torch.testing.assert_close(values["positive_rate"].float(), labels.float().mean(0))
    assert int(values["num_images"]) == 200 and math.isnan(float(values["auroc"][4]))


def test_per_attribute_metrics_match_scikit_learn():
    """scikit-learn is the reference for every per-attribute figure (torchmetrics, which the metrics are built on,
    is not), at 0.5 and at calibrated thresholds, over batches."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    from faceattr.model.metrics import AttributeMetrics, macro

    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (300, 6), generator=g)
    labels[:, 5] = (torch.rand(300, generator=g) < 0.1).long()  # a rare attribute, as CelebA has
    probs = (0.35 * labels + 0.65 * torch.rand(300, 6, generator=g)).clamp(0, 1)  # informative, not perfect
    thresholds = torch.tensor([0.5, 0.3, 0.6, 0.5, 0.45, 0.2])
    metrics = AttributeMetrics(6)
    metrics.set_thresholds(thresholds)
    for start in range(0, 300, 64):
        metrics.update(probs[start : start + 64], labels[start : start + 64])
    values = metrics.compute()
    y, p = labels.numpy(), probs.numpy()
    for a in range(6):
        decided = p[:, a] >= float(thresholds[a])
        assert float(values["auroc"][a]) == pytest.approx(roc_auc_score(y[:, a], p[:, a]), abs=1e-6), a
        assert float(values["acc"][a]) == pytest.approx(accuracy_score(y[:, a], decided), abs=1e-9), a
        assert float(values["bacc"][a]) == pytest.approx(balanced_accuracy_score(y[:, a], decided), abs=1e-9), a
        assert float(values["f1"][a]) == pytest.approx(f1_score(y[:, a], decided), abs=1e-9), a
    macro_auroc = sum(roc_auc_score(y[:, a], p[:, a]) for a in range(6)) / 6
    assert float(macro(values["auroc"])) == pytest.approx(macro_auroc, abs=1e-6)


def test_thresholds_change_the_decisions_not_the_auroc():
    from faceattr.model.metrics import AttributeMetrics

    probs = torch.tensor([[0.3, 0.9], [0.4, 0.8], [0.6, 0.1], [0.2, 0.2]])
    labels = torch.tensor([[1, 1], [1, 1], [0, 0], [0, 0]])
    at_half, calibrated = AttributeMetrics(2), AttributeMetrics(2)
    calibrated.set_thresholds(torch.tensor([0.25, 0.5]))
    for metrics in (at_half, calibrated):
        metrics.update(probs, labels)
    assert float(at_half.compute()["acc"][0]) == 0.25 and float(calibrated.compute()["acc"][0]) == 0.75
    assert float(at_half.compute()["auroc"][0]) == float(calibrated.compute()["auroc"][0])


def test_bf16_autocast_still_computes_probabilities_and_loss_in_float32():
    module = make_module().eval()
    images, labels = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 2, (8, 3))
    logged = {}
    module.log = lambda name, value, **kwargs: logged.setdefault(name, (value, kwargs))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        module.validation_step((images, labels.to(torch.uint8), 0), 0)
    stored = module.metrics["val"].auroc.preds[0]
    assert stored.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        logits = module(images.float() / 255)
    torch.testing.assert_close(stored, torch.sigmoid(logits.float()))
    assert logged["val/loss"][0].dtype == torch.float32
    # Under DDP the validation loss is reduced over ranks like the torchmetrics figures.
    assert logged["val/loss"][1]["sync_dist"] is True


def test_normalization_is_the_backbones_own_unless_configured():
    vit = FaceAttrModule(backbone="test_vit", attributes=ATTRS, image_size=32, backbone_kwargs={"img_size": 32})
    assert vit.hparams.mean == [0.5, 0.5, 0.5] and vit.hparams.std == [0.5, 0.5, 0.5]
    resnet = FaceAttrModule(backbone="resnet10t", attributes=ATTRS, image_size=32)
    assert resnet.hparams.mean == pytest.approx([0.485, 0.456, 0.406])
    explicit = make_module(mean=[0.1, 0.2, 0.3], std=[1, 1, 1])
    assert explicit.hparams.mean == pytest.approx([0.1, 0.2, 0.3])


def test_vit_position_embedding_and_class_token_get_no_weight_decay():
    module = FaceAttrModule(
        backbone="test_vit",
        attributes=ATTRS,
        image_size=32,
        backbone_kwargs={"img_size": 32},
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05),
    )

    class FakeTrainer:
        estimated_stepping_batches = 10

    module._trainer = FakeTrainer()
    optimizer = module.configure_optimizers()
    names = {id(p): n for n, p in module.net.named_parameters()}
    no_decay = {names[id(p)] for group in optimizer.param_groups if group["weight_decay"] == 0 for p in group["params"]}
    assert {"pos_embed", "cls_token"} <= no_decay
    assert not any(name.endswith("qkv.weight") for name in no_decay)


def test_pos_weight_is_not_in_the_checkpoint_weights_and_old_checkpoints_still_load(tmp_path):
    module = make_module(pos_weight=True)
    module.pos_weight = torch.tensor([1.0, 4.0, 9.0])
    assert not any("pos_weight" in key for key in module.state_dict())
    # Checkpoints written before had the loss weights and the best score in their state_dict, or (later) the
    # best score as an entry of its own.
    path = fit_one_epoch_and_save(module, tmp_path / "old.ckpt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["criterion.pos_weight"] = torch.tensor([1.0, 4.0, 9.0])
    checkpoint["state_dict"]["best_val_auroc"] = torch.tensor(0.75)
    checkpoint["faceattr_best_val_auroc"] = 0.75
    torch.save(checkpoint, path)
    loaded = FaceAttrModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), module.eval()(x))
    assert not hasattr(loaded, "best_val_auroc")  # the run's one best score is BestMetric's


def test_best_metric_keeps_the_best_epoch_not_the_last():
    from faceattr.best_metric import BestMetric

    class FakeTrainer:
        sanity_checking = False
        callback_metrics: dict = {}

    trainer, best = FakeTrainer(), BestMetric("val/auroc", "max")
    for value in (0.80, 0.91, 0.85):
        trainer.callback_metrics = {"val/auroc": torch.tensor(value)}
        best.on_validation_end(trainer, None)
    assert best.best == pytest.approx(0.91)
    lowest = BestMetric("val/loss", "min")
    lowest.load_state_dict({"best": 0.3})  # resumed: the first part's best still counts
    for value in (0.5, 0.2, 0.4):
        trainer.callback_metrics = {"val/loss": torch.tensor(value)}
        lowest.on_validation_end(trainer, None)
    assert lowest.best == pytest.approx(0.2)


# --- Unknown labels, one attribute, calibration at test time. ---


def test_unknown_labels_weigh_nothing_in_the_loss_and_pos_weight_still_applies():
    module = make_module(pos_weight=True)
    module.pos_weight = torch.tensor([1.0, 4.0, 9.0])
    g = torch.Generator().manual_seed(3)
    logits = (3 * torch.randn(40, 3, generator=g)).requires_grad_()
    labels = torch.randint(0, 2, (40, 3), generator=g).float()
    labels[torch.rand(40, 3, generator=g) < 0.3] = UNKNOWN_LABEL
    known = labels != UNKNOWN_LABEL
    loss = module.loss(logits, labels)
    # By hand: -[w y log p + (1 - y) log(1 - p)], averaged over the known labels only.
    p, y, w = torch.sigmoid(logits.detach().double()), labels.double(), module.pos_weight.double().expand(40, 3)
    by_hand = -(w * y * p.log() + (1 - y) * (1 - p).log())[known].mean()
    assert float(loss.detach()) == pytest.approx(float(by_hand), rel=1e-5)
    loss.backward()
    assert (logits.grad[~known] == 0).all() and (logits.grad[known] != 0).all()
    # With every label known it is torch's own mean BCE, as before unknown labels existed.
    full = labels.clone()
    full[~known] = 0
    reference = torch.nn.functional.binary_cross_entropy_with_logits(logits, full, pos_weight=module.pos_weight)
    assert float(module.loss(logits, full).detach()) == pytest.approx(float(reference), rel=1e-6)


def test_unknown_labels_are_left_out_of_every_metric_as_scikit_learn_computes_them_on_the_known():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, brier_score_loss, f1_score, roc_auc_score

    from faceattr.model.metrics import AttributeMetrics, f1_thresholds
    from faceattr.reliability import calibration_error

    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 2, (300, 4), generator=g, dtype=torch.uint8)
    probs = (0.35 * labels + 0.65 * torch.rand(300, 4, generator=g)).clamp(0, 1)
    labels[torch.rand(300, 4, generator=g) < 0.25] = UNKNOWN_LABEL
    labels[:, 3][labels[:, 3] == 1] = 0  # known labels of one class only: AUROC undefined
    thresholds = torch.tensor([0.5, 0.4, 0.6, 0.5])
    metrics = AttributeMetrics(4)
    metrics.set_thresholds(thresholds)
    for start in range(0, 300, 64):
        metrics.update(probs[start : start + 64], labels[start : start + 64].int())
    values = metrics.compute()
    assert int(values["num_images"]) == 300
    for a in range(4):
        known = labels[:, a] != UNKNOWN_LABEL
        y, p = labels[known, a].numpy(), probs[known, a].numpy()
        decided = p >= float(thresholds[a])
        assert 0.6 < known.float().mean() < 0.9  # the masked entries are there
        if a < 3:
            assert float(values["auroc"][a]) == pytest.approx(roc_auc_score(y, p), abs=1e-6), a
        else:
            assert math.isnan(float(values["auroc"][a]))
        assert float(values["acc"][a]) == pytest.approx(accuracy_score(y, decided), abs=1e-9), a
        assert float(values["f1"][a]) == pytest.approx(f1_score(y, decided, zero_division=0), abs=1e-9), a
        if a < 3:
            assert float(values["bacc"][a]) == pytest.approx(balanced_accuracy_score(y, decided), abs=1e-9), a
        assert float(values["positive_rate"][a]) == pytest.approx(y.mean(), abs=1e-9), a
        brier = brier_score_loss(y, p.astype("float64"), pos_label=1)
        assert float(values["brier"][a]) == pytest.approx(brier, abs=1e-9), a
        only_known = calibration_error(probs[known, a : a + 1], labels[known, a : a + 1])
        assert float(values["ece"][a]) == pytest.approx(float(only_known[0]), abs=1e-12), a
        threshold, calibrated = f1_thresholds(probs[known, a : a + 1], labels[known, a : a + 1])
        masked_thresholds, masked_calibrated = f1_thresholds(probs, labels)
        assert float(masked_thresholds[a]) == float(threshold[0]) and bool(masked_calibrated[a]) == bool(calibrated)
    # One attribute is measured as its column among four.
    single = AttributeMetrics(1)
    single.set_thresholds(thresholds[:1])
    single.update(probs[:, :1], labels[:, :1].int())
    alone = single.compute()
    for column in ("positive_rate", "acc", "bacc", "auroc", "f1", "ece", "brier"):
        assert float(alone[column][0]) == pytest.approx(float(values[column][0]), abs=1e-12), column


def test_one_attribute_with_unknown_labels_trains_validates_and_tests_with_a_reliability_diagram(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from faceattr.visuals import TensorBoardPictures

    module = FaceAttrModule(
        backbone="test_resnet",
        attributes=["Smiling"],
        image_size=32,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-2),
    )
    trainer = L.Trainer(
        max_epochs=4,
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path, name="tb"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[TensorBoardPictures(every_n_epochs=0)],
    )
    trainer.fit(module, train_dataloaders=loader(64, 1, 0.2), val_dataloaders=loader(32, 1, 0.2))
    assert {"val/auroc", "val/acc", "val/auroc/Smiling"} <= set(trainer.logged_metrics)
    trainer.test(module, dataloaders=loader(48, 1, 0.2), verbose=False)
    logged = trainer.logged_metrics
    assert {"test/auroc", "test/acc", "test/bacc", "test/f1", "test/ece", "test/brier", "test/ece/Smiling"} <= set(
        logged
    )
    assert float(logged["test/auroc"]) > 0.9
    row = module.results["test"]["per_attribute"]["Smiling"]
    assert row["ece"] == pytest.approx(float(logged["test/ece"]), abs=1e-6) and 0 <= row["brier"] < 0.25
    assert module.results["test"]["macro"]["ece"] == pytest.approx(row["ece"], abs=1e-6)
    known = (Separable(48, 1, 0.2).labels != UNKNOWN_LABEL).sum()
    assert module.results["test"]["macro"]["num_images"] == 48 and 30 < int(known) < 48
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert "test/reliability" in events.Tags()["images"] and "test/per_attribute" in events.Tags()["images"]
    assert events.Images("test/reliability")[0].width > 200
    assert "val/pr_curve/Smiling" in events.PluginTagToContent("pr_curves")


def test_face_alignment_is_saved_and_reaches_the_contract(tmp_path):
    module = make_module(face_alignment="detect")
    assert module.hparams.face_alignment == "detect" and module.contract.face_alignment == "detect"
    assert module.contract.default_face_mode == "detect"
    assert make_module().contract.face_alignment == "celeba"
    path = fit_one_epoch_and_save(module, tmp_path / "m.ckpt")
    assert FaceAttrModule.load_from_checkpoint(path, map_location="cpu").contract.face_alignment == "detect"
    with pytest.raises(ValueError, match="face_alignment 'sideways'"):
        make_module(face_alignment="sideways")


def test_face_captions_count_unknown_labels_neither_right_nor_wrong():
    from faceattr.visuals import MISSED, RIGHT, UNKNOWN, WRONG, face_lines

    attributes = ["Smiling", "Male", "Bangs", "Eyeglasses"]
    lines = face_lines([0.9, 0.7, 0.2, 0.1], [UNKNOWN_LABEL, 0, 1, UNKNOWN_LABEL], attributes, top_k=3)
    assert lines == [
        ("2 of 2 wrong", WRONG),
        ("Smiling 0.90", UNKNOWN),
        ("Male 0.70", WRONG),
        ("missed Bangs 0.20", MISSED),
    ]
    assert face_lines([0.9, 0.1], [1.0, float(UNKNOWN_LABEL)], attributes[:2], top_k=1)[0] == ("all 1 right", RIGHT)
