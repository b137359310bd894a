"""The plain peer of the serving benchmark: faceattr's exported model served by a BentoML 1.4 service written by hand,
the way BentoML's documentation and a typical tutorial write one. No faceattr code: only the model's folder in the
BentoML model store (``model.pt`` and ``faceattr.json``, written by ``python export.py``).

- Input: ``PIL.Image.Image`` (BentoML's documented image type: multipart upload, opened by Pillow).
- Preprocessing: torchvision ``transforms.v2`` in the order torchvision documents (``ToImage`` first, the geometry
  on the uint8 tensor, ``ToDtype(float32, scale=True)`` last): the centre crop of the aligned face and the resize to
  the model's input size, as ``faceattr.json`` states them. No ``Normalize``: the exported model normalizes inside
  and takes RGB floats in [0, 1] (``faceattr.json`` ``input.range``).
- Model: the TorchScript artefact, ``torch.jit.load`` from the store (``bentoml.models.BentoModel``).
- One endpoint with BentoML's adaptive batching (``batchable=True``, ``max_batch_size=32``).

Run it from the repo root (``benchmarks/serving.py`` does, beside ``bentoml serve`` of faceattr's own service)::

    bentoml serve benchmarks.plain_bentoml_service:PlainImageClassifier --arg workers=2
    curl -F images=@photo.jpg http://localhost:3000/predict
"""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import torch
from PIL.Image import Image
from pydantic import BaseModel
from torchvision.transforms import v2


class Arguments(BaseModel):
    """``bentoml serve ... --arg key=value`` (BentoML's template arguments)."""

    model: str = "faceattr:latest"
    workers: int = 1


args = bentoml.use_arguments(Arguments)


@bentoml.service(workers=args.workers)
class PlainImageClassifier:
    """Face attribute probabilities of photos, served the documented way."""

    bento_model = bentoml.models.BentoModel(args.model)

    def __init__(self) -> None:
        metadata = json.loads(Path(self.bento_model.path_of("faceattr.json")).read_text())
        contract = metadata["contract"]
        self.attributes = contract["attributes"]
        self.thresholds = [contract["thresholds"][name] for name in self.attributes]
        self.model = torch.jit.load(self.bento_model.path_of(metadata["formats"]["torchscript"])).eval()
        self.transform = v2.Compose(
            [
                v2.ToImage(),
                v2.CenterCrop(contract["crop"]),
                v2.Resize(contract["image_size"], antialias=True),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )

    @bentoml.api(batchable=True, max_batch_size=32)
    def predict(self, images: list[Image]) -> list[dict]:
        """Multipart field ``images`` (one or more photos) -> per photo, the probability of each attribute and the
        attributes present (probability >= the exported threshold)."""
        batch = torch.stack([self.transform(image.convert("RGB")) for image in images])
        with torch.inference_mode():
            probabilities = self.model(batch).tolist()
        return [
            {
                "attributes": dict(zip(self.attributes, row)),
                "present": [name for name, p, t in zip(self.attributes, row, self.thresholds) if p >= t],
            }
            for row in probabilities
        ]
