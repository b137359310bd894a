"""The LightningModule: forward/backward, metric names and values, self-describing checkpoints, weights errors."""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import timm
import torch
from torch.utils.data import DataLoader, Dataset

from faceattr.errors import UserError
from faceattr.model import FaceAttrModule
from faceattr.model.metrics import AttributeAUROC

ATTRS = ["Smiling", "Male", "Eyeglasses"]


def make_module(**kwargs) -> FaceAttrModule:
    kwargs.setdefault("optimizer", functools.partial(torch.optim.AdamW, lr=1e-2))
    return FaceAttrModule(backbone="test_resnet", attributes=ATTRS, image_size=32, **kwargs)


class Separable(Dataset):
    """Attribute k is on when channel k is bright: learnable in a few steps."""

    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, 2, (n, 3), generator=g, dtype=torch.uint8)
        noise = torch.randint(0, 60, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        self.images = noise + self.labels.view(n, 3, 1, 1) * 180

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def loader(n: int = 64) -> DataLoader:
    def collate(items):
        return torch.stack([i for i, _ in items]), torch.stack([lbl for _, lbl in items]), 0

    return DataLoader(Separable(n), batch_size=16, collate_fn=collate)


def test_forward_backward_shapes_and_gradients():
    module = make_module()
    images = torch.rand(4, 3, 32, 32, requires_grad=True)
    logits = module(images)
    assert logits.shape == (4, 3)
    logits.sum().backward()
    assert images.grad is not None and all(p.grad is not None for p in module.net.parameters() if p.requires_grad)


def test_training_logs_the_agreed_metric_names_and_learns(tmp_path):
    module = make_module()
    trainer = L.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=loader(), val_dataloaders=loader(32))
    fit_metrics = dict(trainer.logged_metrics)
    expected = {"train/loss_epoch", "val/loss", "val/auroc", "val/acc", "val/f1", "val/auroc_best"}
    assert expected | {f"val/auroc/{a}" for a in ATTRS} <= set(fit_metrics)
    assert float(fit_metrics["val/auroc_best"]) >= float(fit_metrics["val/auroc"]) - 1e-6
    trainer.test(module, dataloaders=loader(32), verbose=False)
    expected = {"test/loss", "test/auroc", "test/acc", "test/f1"} | {f"test/auroc/{a}" for a in ATTRS}
    assert expected <= set(trainer.logged_metrics)
    assert float(trainer.logged_metrics["test/auroc"]) > 0.9


def test_checkpoint_rebuilds_the_model_alone(tmp_path):
    module = make_module(crop=178)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=loader(16), val_dataloaders=loader(16))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
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
    torch.testing.assert_close(module.criterion.pos_weight, torch.tensor([1.0, 4.0, 9.0]))


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
