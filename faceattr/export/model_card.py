"""``MODEL_CARD.md``: the exported model's card, generated at export (Mitchell et al., "Model Cards for Model
Reporting", FAT* 2019).

A face-attribute model is a model about people: before it is used, the question is for whom it fails, whether its
probabilities mean what they say and what it is for. The card answers in Mitchell et al.'s sections: model details,
intended use, factors, metrics and decision thresholds, evaluation and training data, quantitative analyses (the test
split disaggregated by group with 95% intervals, the worst groups, calibration), ethical considerations, caveats.

Every figure in it comes from the export's own metadata (``faceattr.json``: the contract, ``metrics.test`` of
:mod:`faceattr.export.figures`) and the group table computed from the same test predictions, so the card, the
metadata and the served model cannot disagree. :func:`render_card` is a pure function of them; figures are printed
with :data:`DIGITS` decimals, and a figure that could not be measured is printed as :data:`MISSING`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceattr.attributes import CELEBA_ATTRIBUTES

DIGITS = 4
MISSING = "n/a"
#: The attributes a re-annotation of CelebA found close to random (Wu et al., CVPR workshops 2023).
NEAR_RANDOM_LABELS = ("High_Cheekbones", "Pointy_Nose", "Oval_Face")
#: The card's sections, in order (Mitchell et al. 2019; a test checks each is there).
SECTIONS = (
    "Model details",
    "Intended use",
    "Out-of-scope uses",
    "Factors",
    "Metrics and decision thresholds",
    "Evaluation data",
    "Training data",
    "Quantitative analyses",
    "Ethical considerations",
    "Caveats and recommendations",
)
#: The group table's rates, in column order (each with its 95% interval).
GROUP_RATES = ("positive_rate", "predicted_positive_rate", "acc", "fpr", "fnr", "auroc")


def fmt(value: Any) -> str:
    """A figure as the card prints it."""
    if value is None or isinstance(value, bool):
        return MISSING
    value = float(value)
    return f"{value:.{DIGITS}f}" if math.isfinite(value) else MISSING


def _interval(row: dict[str, Any], name: str) -> str:
    value = fmt(row.get(name))
    low, high = fmt(row.get(f"{name}_low")), fmt(row.get(f"{name}_high"))
    return value if MISSING in (value, low, high) else f"{value} [{low}, {high}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _training_data(meta: dict[str, Any]) -> tuple[str, bool]:
    """A sentence on the training data (``training_data`` of the metadata), and whether it was generated."""
    data = meta.get("training_data") or {}
    if not data:
        return "Unknown (the checkpoint has no run config)", False
    generated = data.get("generated")
    if generated:
        detail = ", ".join(f"{k} {v}" for k, v in generated.items())
        return f"Generated faces (faceattr's synthetic CelebA-format generator: {detail}) in `{data.get('root')}`", True
    limit = data.get("limit")
    where = f"{data.get('data_module', 'a data module')}{'' if limit is None else f', limit {limit} images'}"
    return f"`{data.get('root')}` ({where})", False


def _details(meta: dict[str, Any], tag: str | None, exported_on: str) -> list[str]:
    contract, source = meta["contract"], meta.get("source") or {}
    run = (meta.get("metrics") or {}).get("run") or {}
    crop = contract.get("crop")
    data, synthetic = _training_data(meta)
    rows = [
        ("Model", f"`{tag}` in the BentoML model store" if tag else "not saved to a model store (store=false)"),
        ("Exported on", exported_on),
        ("faceattr version", meta.get("faceattr_version", MISSING)),
        ("Backbone", f"`{contract['backbone']}` ({meta.get('num_parameters', MISSING)} parameters)"),
        ("Output", f"{len(contract['attributes'])} attribute probabilities (multi-label, one sigmoid each)"),
        ("Input", "x".join(map(str, contract["image_size"])) + f" RGB, crop {crop} of the aligned face frame"),
        ("Face alignment", f"{contract.get('face_alignment', 'celeba')} (service default face mode follows it)"),
        ("Training data", f"**{data}**" if synthetic else data),
        ("Run", f"`{source.get('run_dir') or MISSING}`"),
        ("Checkpoint", f"`{source.get('checkpoint', MISSING)}` ({source.get('picked', '')})"),
        (
            "Training",
            f"{run.get('epochs', MISSING)} epochs, best {run.get('monitor', MISSING)} {fmt(run.get('best_score'))}",
        ),
    ]
    return ["## Model details", "", *_table(("", ""), rows)]


INTENDED = """## Intended use

- Estimating the visible facial attributes it was trained on (the per-attribute table below) in photographs of
  faces framed like its training images, for research, prototyping, photo organisation and content tagging, with a
  person checking results where they matter.
- Studying how attribute classifiers behave across groups; this card's figures are a starting point for that.

## Out-of-scope uses

- Identifying, verifying or tracking people; surveillance.
- Inferring sensitive characteristics (gender identity, age, ethnicity, health, sexual orientation) from appearance:
  attributes such as Male or Young are annotators' impressions of a face, not facts about the person.
- Decisions about people (hiring, credit, housing, insurance, education, law enforcement, access to services).
- Subjective judgements such as Attractive: a label that says how annotators rated a face says nothing about a person.
- Images unlike its training data (other framing, no face, drawings, very low resolution) without evaluating there."""


def _factors(groups: Sequence[str]) -> list[str]:
    evaluated = (
        f"Groups evaluated: {', '.join(f'`{g}`' for g in groups)} and their intersections, taken from the test data's "
        "own labels (never from the model's predictions); an attribute is not reported against itself."
        if groups
        else "No group factors were evaluated (no group attribute in the data, `groups=[]`, or `test_metrics=false`)."
    )
    return [
        "## Factors",
        "",
        f"- {evaluated}",
        "- The group labels are binary annotations of appearance, not self-identification; age and gender are not "
        "binary in the world.",
        "- Not evaluated here and known to matter for face analysis: skin tone, pose, lighting, occlusion, image "
        "quality, camera and face-detector failures.",
    ]


def _metrics_section(meta: dict[str, Any]) -> list[str]:
    contract = meta["contract"]
    calibration = ((meta.get("metrics") or {}).get("test") or {}).get("calibration") or {}
    temperature = calibration.get("method") == "temperature"
    return [
        "## Metrics and decision thresholds",
        "",
        "- AUROC (threshold-free), accuracy, balanced accuracy and F1 per attribute (macro = mean over attributes); "
        "for each group: positive rate, accuracy, false positive rate (FPR) and false negative rate (FNR) with Wilson "
        "95% intervals, AUROC with a bootstrap 95% interval; worst-group accuracy over the four groups of (attribute "
        "label x group value); expected calibration error (ECE, 15 equal-width bins) and Brier score.",
        f"- Decision thresholds: {contract['threshold_method']}. An attribute is present when its probability is at "
        "least its threshold (per-attribute table below); the service and predict.py decide the same way.",
        "- Probabilities: "
        + (
            "temperature-scaled, sigmoid(logit / T) with one T per attribute fitted on the validation split "
            "(Guo et al., ICML 2017); the artefacts apply it."
            if temperature
            else "the model's plain sigmoid outputs (`export.calibration=none`)."
        ),
    ]


def _data_sections(meta: dict[str, Any]) -> list[str]:
    metrics = meta.get("metrics") or {}
    test, validation = metrics.get("test") or {}, metrics.get("validation") or {}
    data, _ = _training_data(meta)
    evaluation = (
        f"The run's test split: {test['num_images']} images, through the service's preprocessing. No test image "
        "was used for training, thresholds or temperatures."
        if test.get("num_images")
        else "No test-split evaluation was made (no test data, or `test_metrics=false`): the figures below are missing."
    )
    return [
        "## Evaluation data",
        "",
        evaluation,
        "",
        "## Training data",
        "",
        f"{data}; training split of the run. Thresholds"
        + (" and temperatures" if (test.get("calibration") or {}).get("method") == "temperature" else "")
        + f" were set on {validation.get('num_images', 0)} validation images of the same run.",
    ]


def _overall(test: dict[str, Any]) -> list[str]:
    rows = [
        (rule, fmt(test.get("auroc")), fmt(values.get("acc")), fmt(values.get("bacc")), fmt(values.get("f1")))
        for rule, values in (
            ("0.5", test.get("at_0.5") or {}),
            ("calibrated thresholds", test.get("at_thresholds") or {}),
        )
    ]
    return [
        "### Overall (test split, macro over attributes)",
        "",
        *_table(("Decision rule", "AUROC", "Accuracy", "Balanced accuracy", "F1"), rows),
    ]


def _per_attribute(contract: dict[str, Any], test: dict[str, Any]) -> list[str]:
    calibration = test.get("calibration") or {}
    worst = (test.get("groups") or {}).get("worst") or {}
    rows = []
    for name in contract["attributes"]:
        w = worst.get(name) or {}
        rows.append(
            (
                name,
                fmt(contract["thresholds"][name]),
                fmt(contract["temperatures"][name]),
                fmt((test.get("positive_rates") or {}).get(name)),
                fmt((test.get("predicted_positive_rates") or {}).get(name)),
                fmt(((calibration.get("ece_before") or {}).get("per_attribute") or {}).get(name)),
                fmt(((calibration.get("ece_after") or {}).get("per_attribute") or {}).get(name)),
                fmt(w.get("avg_acc")),
                fmt(w.get("worst_group_acc")),
                w.get("worst_group", MISSING),
            )
        )
    header = (
        "Attribute", "Threshold", "Temperature", "Test positive rate", "Predicted positive rate", "ECE before",
        "ECE after", "Accuracy", "Worst-group accuracy", "Worst group",
    )  # fmt: skip
    return ["### Per attribute (test split)", "", *_table(header, rows)]


def _groups(rows: Sequence[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["### Disaggregated by group", "", "Not measured (no group attributes)."]
    body = [(r["attribute"], r["group"], r["n"], *(_interval(r, rate) for rate in GROUP_RATES)) for r in rows]
    header = ("Attribute", "Group", "n", "Positive rate", "Predicted positive rate", "Accuracy", "FPR", "FNR", "AUROC")
    return [
        "### Disaggregated by group (test split, 95% intervals)",
        "",
        "Each rate with its 95% interval in brackets (Wilson; bootstrap for AUROC); n = the group's test images with "
        "a known label (`all`: every such image).",
        "",
        *_table(header, body),
    ]


def _worst(test: dict[str, Any], k: int = 10) -> list[str]:
    worst = (test.get("groups") or {}).get("worst") or {}
    ranked = sorted(
        ((n, w) for n, w in worst.items() if w.get("worst_group_acc") is not None),
        key=lambda item: float(item[1]["worst_group_acc"]),
    )[:k]
    if not ranked:
        return []
    rows = [(n, w["worst_group"], fmt(w["worst_group_acc"]), fmt(w["avg_acc"])) for n, w in ranked]
    return [
        f"### Worst groups (the {len(rows)} lowest worst-group accuracies)",
        "",
        *_table(("Attribute", "Worst group", "Worst-group accuracy", "Accuracy"), rows),
    ]


def _calibration(test: dict[str, Any]) -> list[str]:
    calibration = test.get("calibration") or {}
    if not calibration:
        return []

    def macro(key: str) -> str:
        return fmt((calibration.get(key) or {}).get("macro"))

    rows = [
        ("ECE", macro("ece_before"), macro("ece_after")),
        ("Brier score", macro("brier_before"), macro("brier_after")),
    ]
    return [
        f"### Calibration (test split, macro over attributes; method: {calibration.get('method')})",
        "",
        *_table(("Figure", "Before temperature scaling", "Served (after)"), rows),
    ]


def _int8(contract: dict[str, Any]) -> list[str]:
    """The int8 artefact's cost (export.quantize=int8): both artefacts on the same test images, through ONNX Runtime."""
    int8 = contract.get("int8")
    if not int8:
        return []
    rows = [
        ("Macro AUROC", fmt(int8["auroc_fp32"]), fmt(int8["auroc_int8"]), fmt(int8["auroc_drop"])),
        ("Mean accuracy at the thresholds", fmt(int8["acc_fp32"]), fmt(int8["acc_int8"]), MISSING),
    ]
    changes = sorted((int8.get("acc_change") or {}).items(), key=lambda item: item[1])
    worst = ", ".join(f"{name} {change:+.4f}" for name, change in changes[:3]) or MISSING
    return [
        f"### int8 artefact ({int8['artefact']}; {int8['test_images']} test images, calibrated on "
        f"{int8['calibration_images']} validation images)",
        "",
        *_table(("Figure", "fp32", "int8", "Drop (fp32 - int8)"), rows),
        "",
        f"Largest |probability difference| from fp32: {fmt(int8['max_abs_delta_p'])}; largest accuracy losses: "
        f"{worst}.",
    ]


ETHICS = """## Ethical considerations

- The model's outputs are about people's faces. Errors are not spread evenly: read the disaggregated table and the
  worst groups before relying on any attribute for a group of people.
- The training faces and their labels carry their source's biases (who was photographed, who annotated, how).
- Group labels used for evaluation are themselves annotations and can be wrong or reductive."""


def _caveats(meta: dict[str, Any]) -> list[str]:
    contract = meta["contract"]
    _, synthetic = _training_data(meta)
    names = list(contract["attributes"])
    lines = ["## Caveats and recommendations", ""]
    if synthetic:
        lines.append(
            "- **This model was trained and evaluated on generated faces, not photographs of people.** Its figures say "
            "how it does on the generator's images and nothing about real faces; do not deploy it on real photos."
        )
    celeba = [n for n in names if n in CELEBA_ATTRIBUTES]
    if celeba:
        noisy = [n for n in names if n in NEAR_RANDOM_LABELS]
        lines.append(
            ("- The attributes are CelebA's. " if synthetic else "- ")
            + "CelebA's labels are noisy: a re-annotation study found that only 12 of the 40 attributes reach at least "
            "95% agreement, and that High_Cheekbones, Pointy_Nose and Oval_Face are close to random (Wu et al., "
            '"Consistency and Accuracy of CelebA Attribute Values", CVPR workshops 2023). Accuracy against such '
            "labels is a ceiling of label agreement, not of the model."
            + (f" This model predicts {', '.join(noisy)}: treat those outputs as unreliable." if noisy else "")
        )
    lines += [
        "- The validation figures in the metadata were measured at thresholds tuned on those same images "
        "(optimistic); the test figures here use the same thresholds the service applies.",
        "- Intervals are for the test split's sampling only; they do not cover a shift in the images served.",
        "- Compare the served positive rate of each attribute (the service's `/metrics`) with the test positive "
        "rates above: a large gap means the served images differ from the test split.",
    ]
    return lines


def render_card(
    metadata: dict[str, Any], group_rows: Sequence[dict[str, Any]], tag: str | None, exported_on: str
) -> str:
    """The model card (Markdown) of an export: ``metadata`` is its ``faceattr.json``, ``group_rows`` the rows of its
    test split's group report, ``tag`` the model store's tag (None: not stored), ``exported_on`` an ISO date."""
    contract = metadata["contract"]
    test = (metadata.get("metrics") or {}).get("test") or {}
    groups = list((test.get("groups") or {}).get("groups") or [])
    title = tag or contract["backbone"]
    parts: list[list[str]] = [
        [
            f"# Model card: {title}",
            "",
            "A face-attribute classifier exported by faceattr (Mitchell et al. 2019 sections).",
        ],
        _details(metadata, tag, exported_on),
        [INTENDED],
        _factors(groups),
        _metrics_section(metadata),
        _data_sections(metadata),
        ["## Quantitative analyses", ""] + _overall(test),
        _per_attribute(contract, test),
        _groups(group_rows),
        _worst(test),
        _calibration(test),
        _int8(contract),
        [ETHICS],
        _caveats(metadata),
    ]
    return "\n\n".join("\n".join(part) for part in parts if part) + "\n"


def training_data(run_config: dict[str, Any]) -> dict[str, Any]:
    """What the model was trained on, for the card: the run's data root and module, and whether the faces were
    generated (``data.synthetic`` set, or the generator's marker in the data root)."""
    from faceattr.data.synthetic import read_marker

    data = run_config.get("data") or {}
    if not data:
        return {}
    root, synthetic = data.get("root"), data.get("synthetic")
    marker = read_marker(Path(str(root)).expanduser()) if root else None
    generated = dict(synthetic) if isinstance(synthetic, dict) else None
    if generated is None and marker:
        generated = {key: marker[key] for key in ("num_images", "seed") if key in marker}
    return {
        "root": root,
        "data_module": str(data.get("_target_", "")).rsplit(".", 1)[-1] or None,
        "limit": data.get("limit"),
        "generated": generated,
    }
