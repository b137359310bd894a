"""Saving an export to the BentoML model store (``bentoml.models.create``; BENTOML_HOME, default ~/bentoml).

:func:`store_export` is the export's last step: ``config.yaml``, ``faceattr.json`` and ``MODEL_CARD.md`` beside the
artefacts, then (``store=true``) a new version of the model holding all of them. The card names the model's tag, which
BentoML picks when the version is created, so it is rendered inside :func:`save_model`; the label ``model_card`` and
the metadata entry of the same name say which file of the model's folder it is (``bentoml models get <tag>`` shows
them, ``bentoml models get <tag> -o path`` the folder), and every Bento built from the model carries it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from faceattr.atomic import write_json, write_text
from faceattr.contract import ModelContract
from faceattr.errors import UserError
from faceattr.layout import EXPORT_CONFIG, METADATA_FILE, MODEL_CARD_FILE

log = logging.getLogger(__name__)

#: Where the card is, as the metadata and ``bentoml models get`` say it.
MODEL_CARD_ENTRY = {"file": MODEL_CARD_FILE, "where": "the model's folder: bentoml models get <tag> -o path"}


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


def save_model(
    name: str,
    files: dict[str, Path],
    labels: dict[str, str],
    metadata: dict[str, Any],
    texts: Callable[[str], dict[str, str]] | None = None,
) -> tuple[str, Path]:
    """Create a new version of model ``name`` holding ``files`` (stored name -> source path) and the text files
    ``texts(tag)`` returns for the new version's tag (stored name -> content).

    Returns the tag (``name:version``) and the model's folder in the store.
    """
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")  # no usage-analytics call from an export
    import bentoml

    name = check_model_name(name)
    with bentoml.models.create(name, labels=labels, metadata=plain_metadata(metadata)) as model:
        for stored_name, source in files.items():
            shutil.copyfile(source, model.path_of(stored_name))
        for stored_name, text in (texts(str(model.tag)) if texts else {}).items():
            write_text(model.path_of(stored_name), text)
    return str(model.tag), Path(bentoml.models.get(model.tag).path)


def store_export(
    cfg: DictConfig,
    contract: ModelContract,
    files: dict[str, Path],
    metadata: dict[str, Any],
    run_config: dict[str, Any],
    out_dir: Path,
    card: Callable[[str | None], str],
) -> str | None:
    """``config.yaml``, ``faceattr.json`` and the model card (``card(tag)``; None: not stored) beside the artefacts,
    then, with ``store=true``, a new model version in the store holding them all; returns its tag (None: not
    stored)."""
    metadata_path, config_path, card_path = out_dir / METADATA_FILE, out_dir / EXPORT_CONFIG, out_dir / MODEL_CARD_FILE
    export_cfg = OmegaConf.to_container(cfg, resolve=True)
    write_text(config_path, yaml.safe_dump({"train": run_config, "export": export_cfg}, sort_keys=False))
    metadata["model_card"] = MODEL_CARD_ENTRY
    if not cfg.get("store", True):
        write_text(card_path, card(None))
        return None
    store_meta = dict(
        metadata, config=yaml.safe_dump(run_config, sort_keys=False) if run_config else "", export_config=export_cfg
    )
    labels = {
        "backbone": contract.backbone,
        "image_size": "x".join(map(str, contract.image_size)),
        "formats": "+".join(metadata["formats"]),
        "project": "faceattr",
        "model_card": MODEL_CARD_FILE,
    }
    write_json(metadata_path, metadata)
    card_path.unlink(missing_ok=True)  # an earlier export's card must not sit beside these artefacts if saving fails
    texts: dict[str, str] = {}

    def rendered(tag: str) -> dict[str, str]:
        texts[MODEL_CARD_FILE] = card(tag)
        return dict(texts)

    tag, store_path = save_model(
        str(cfg.name), {**files, METADATA_FILE: metadata_path, EXPORT_CONFIG: config_path}, labels, store_meta, rendered
    )
    write_text(card_path, texts[MODEL_CARD_FILE])  # the same card beside the artefacts
    log.info(f"bentoml:     saved {tag} ({store_path}; model card: {store_path / MODEL_CARD_FILE})")
    return tag
