"""Saving an export to the BentoML model store (``bentoml.models.create``; BENTOML_HOME, default ~/bentoml)."""

from __future__ import annotations

import os
import shutil
from datetime import date, datetime
from pathlib import Path
from typing import Any

from faceattr.errors import UserError


def plain_metadata(value: Any) -> Any:
    """BentoML metadata accepts str/int/float/bool/dict/list only: drop None entries, stringify the rest."""
    if isinstance(value, dict):
        return {str(k): plain_metadata(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [plain_metadata(v) if v is not None else "null" for v in value]
    if isinstance(value, (str, bool, int, float, datetime, date)):
        return value
    return str(value)


def check_model_name(name: str) -> str:
    """A valid BentoML model name (lower case letters, digits, '-', '_', '.'), or UserError."""
    from bentoml import Tag
    from bentoml.exceptions import BentoMLException

    try:
        tag = Tag.from_taglike(str(name))
    except (BentoMLException, ValueError) as exc:
        raise UserError(f"name={name!r} is not a valid BentoML model name: {exc}") from None
    if tag.version is not None:
        raise UserError(f"name={name!r}: give a name only; BentoML picks the version")
    return tag.name


def save_model(name: str, files: dict[str, Path], labels: dict[str, str], metadata: dict[str, Any]) -> tuple[str, Path]:
    """Create a new version of model ``name`` holding ``files`` (stored name -> source path).

    Returns the tag (``name:version``) and the model's folder in the store.
    """
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")  # no usage-analytics call from an export
    import bentoml

    name = check_model_name(name)
    with bentoml.models.create(name, labels=labels, metadata=plain_metadata(metadata)) as model:
        for stored_name, source in files.items():
            shutil.copyfile(source, model.path_of(stored_name))
    return str(model.tag), Path(bentoml.models.get(model.tag).path)
