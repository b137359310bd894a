"""What the API's OpenAPI spec (``/docs.json``, the Swagger UI) documents: the requests (the upload and the form
fields beside it: :func:`upload_inputs`, which the upload reader's routes follow: :func:`upload_route`) and the
answers. The endpoints (``service.py``) write their JSON directly; these models describe it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from faceattr.serve.bentoml_workarounds import ReadUpload
from faceattr.serve.config import FACE_MODES
from faceattr.serve.face_finding import FACES_CHOICES
from faceattr.serve.upload_guard import UploadRoute


class Face(BaseModel):
    """A face the detector found (face=detect), in the photo's pixels (upright, after its EXIF rotation)."""

    box: list[float] = Field(description="x0, y0, x1, y1 of the face")
    landmarks: list[list[float]] = Field(
        description="(x, y) of the 5 landmarks in CelebA's order: lefteye, righteye, nose, leftmouth, rightmouth"
    )
    score: float = Field(description="the detector's confidence, 0-1")


FACE_DESCRIPTION = (
    "the face the answer is about; null: the photo's centre crop (face=center, or no face found with the server's "
    "no_face=center)"
)


class ImagePrediction(BaseModel):
    attributes: dict[str, float] = Field(description="probability of each attribute, in the model's order")
    present: list[str] = Field(description="attributes whose probability is >= their threshold")
    face: Face | None = Field(description=FACE_DESCRIPTION)


class Prediction(BaseModel):
    """One photo's result: about one face (or the centre crop), or with faces=all one entry per face."""

    model: str = Field(description="BentoML tag of the model that answered")
    attributes: dict[str, float] | None = Field(
        None, description="probability of each attribute, in the model's order (absent with faces=all)"
    )
    present: list[str] | None = Field(
        None, description="attributes whose probability is >= their threshold (absent with faces=all)"
    )
    face: Face | None = Field(None, description=FACE_DESCRIPTION + " (absent with faces=all)")
    faces: list[ImagePrediction] | None = Field(
        None, description="faces=all only: one entry per face found, largest first"
    )


class BatchPrediction(BaseModel):
    model: str
    predictions: list[ImagePrediction] = Field(description="one per image (its largest face), in the order sent")


# The form fields that choose what the model looks at (beside the image), as the OpenAPI spec shows them. The
# endpoints take them typed Any, so that any value sent (the upload reader reads form values as JSON when they parse,
# as the document's encoding says: 1, null, ...) reaches face_options, which answers a bad one with one line.


def face_field(default: str) -> Any:
    """The form field ``face``, whose default is the server's ``face`` setting for the served model."""
    return Field(
        default,
        description="center: the photo's centre, cropped like CelebA's aligned faces | detect: find the face and "
        f"align it as CelebA's were (default: the server's face setting for this model, here {default})",
        json_schema_extra={"type": "string", "enum": list(FACE_MODES)},
    )


FACES_FIELD = Field(
    "largest",
    description="with face=detect: answer for the largest face, or for all faces found (then the answer is "
    '{"model", "faces": [...]})',
    json_schema_extra={"type": "string", "enum": list(FACES_CHOICES)},
)


def upload_inputs(face_default: str) -> tuple[type[ReadUpload], type[ReadUpload]]:
    """The requests of ``/predict`` and ``/predict_batch``: the file field first, then the option fields (sent as
    text; the upload reader reads them, ``upload_guard.py``). ``face`` defaults to the server's setting."""
    face_option = face_field(face_default)  # a class body cannot read a local of the same name as its field

    class PredictInput(ReadUpload):
        image: Path = Field(description="the photo: JPEG, PNG or WebP, any size (a file upload; URLs are not fetched)")
        face: Any = face_option
        faces: Any = FACES_FIELD

    class PredictBatchInput(ReadUpload):
        images: list[Path] = Field(
            description="the photos, one file part each (JPEG, PNG or WebP; at most max_images_per_request)"
        )
        face: Any = face_option

    return PredictInput, PredictBatchInput


def upload_route(spec: type[ReadUpload], max_files: int = 1) -> UploadRoute:
    """What the upload reader takes for the request ``spec`` documents: its first field as the file field, the
    others as option fields."""
    file_field, *options = spec.model_fields
    return UploadRoute(file_field, tuple(options), max_files)
