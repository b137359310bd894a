"""Data from the user's own folders: data=folder's CSV (values, unknowns, bad rows, made and recorded splits), k-fold
splits, attribute names from the data, group labels, a run's datamodule rebuilt, and a CelebA-format folder with its
own columns through train, eval, export and the service."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_main, run_script
from PIL import Image

from faceattr.attributes import RESERVED_NAMES, UNKNOWN_LABEL, check_attribute_names
from faceattr.data import CelebADataModule, read_celeba, read_folder
from faceattr.data.celeba import SPLITS
from faceattr.data.run_data import run_datamodule
from faceattr.errors import UserError
from faceattr.layout import SPLIT_RECORD


def write_photos(root: Path, paths: list[str], seed: int = 0) -> None:
    """Small noise photos of various sizes (not CelebA's 178x218) at ``paths`` under ``root``."""
    rng = np.random.default_rng(seed)
    for i, path in enumerate(paths):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        size = (40 + 7 * (i % 5), 30 + 11 * (i % 3), 3)
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(target)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([header, *rows])
    return path


def folder(root: Path, rows: list[list[str]], header: list[str], photos: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if photos:
        write_photos(root, [row[0] for row in rows])
    write_csv(root / "labels.csv", header, rows)
    return root


def datamodule(root: Path, **kwargs) -> CelebADataModule:
    kwargs.setdefault("labels", "labels.csv")
    return CelebADataModule(root=str(root), image_size=16, batch_size=4, num_workers=0, **kwargs)


def labelled_rows(count: int, seed: int = 0) -> list[list[str]]:
    """``count`` rows ``photos/<i>.png,<Rare>,<Common>,<Half>``: Rare ~10% positive (with unknowns), Half 50%."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        rare = "1" if i % 10 == 3 else ("" if i % 17 == 5 else "0")
        rows.append([f"photos/{i:03d}.png", rare, str(int(rng.random() < 0.7)), "true" if i % 2 else "false"])
    return rows


HEADER = ["path", "Rare", "Common", "Half"]


# ---- the CSV ----


def test_values_unknowns_split_column_and_file_order(tmp_path):
    rows = [
        ["a.png", "train", "1", "-1", "true", ""],
        ["sub/b.png", "train", "0", "1", "FALSE", "1"],
        ["c.png", "valid", "1", "", " True ", "0"],
        ["d.png", "test", "", "-1", "false", "-1"],
        ["e.png", "train", "", "1", "0", "1"],
    ]
    root = folder(tmp_path / "faces", rows, ["path", "split", "Smiling", "Big Nose", "Lächeln", "z_last"])
    index = read_folder(root, "labels.csv")
    assert index.attribute_names == ("Smiling", "Big Nose", "Lächeln", "z_last")  # file order, split is no attribute
    U = UNKNOWN_LABEL
    assert index.labels.tolist() == [[1, 0, 1, U], [0, 1, 0, 1], [1, U, 1, 0], [U, 0, 0, 0], [U, 1, 0, 1]]
    assert index.partitions.tolist() == [0, 0, 1, 2, 0] and index.filenames[1] == b"sub/b.png"
    dm = datamodule(root)
    dm.setup()
    assert dm.attribute_names == dm.column_names == index.attribute_names
    assert [len(dm.splits[s]) for s in SPLITS] == [3, 1, 1]
    images, labels = dm.splits["train"][1]
    assert images.shape == (3, 16, 16) and labels.tolist() == [0, 1, 0, 1]
    # Unknowns are not negatives: Smiling is known on 2 of the 3 training rows, 1 positive.
    assert dm.train_positive_rate.tolist() == pytest.approx([0.5, 2 / 3, 1 / 3, 1.0])
    picked = datamodule(root, attributes=["z_last", "Smiling"])
    picked.setup()
    assert picked.splits["valid"].labels.tolist() == [[0, 1]] and picked.column_names == index.attribute_names


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", r"labels.csv line 3 \(b.png\): no such file .*b.png"),
        ("value", r"labels.csv line 3 \(b.png\): value 'maybe' of column Common is not a label \(1/0, 1/-1"),
        ("duplicate", r"labels.csv line 4 \(\./a.png\): the same image as line 2"),
        ("cells", r"labels.csv line 3 \(b.png\): expected 4 cells, found 3"),
    ],
)
def test_a_bad_row_is_one_line_naming_it_or_skipped_and_counted(tmp_path, caplog, damage, message):
    rows = [["a.png", "1", "0", "1"], ["b.png", "0", "1", "0"], ["c.png", "1", "1", "0"]]
    root = folder(tmp_path / "faces", rows, HEADER)
    if damage == "missing":
        (root / "b.png").unlink()
    elif damage == "value":
        rows[1][2] = "maybe"
    elif damage == "duplicate":
        rows[2][0] = "./a.png"
    else:
        rows[1] = rows[1][:3]
    write_csv(root / "labels.csv", HEADER, rows)
    with pytest.raises(UserError, match=message + r".*data.skip_corrupt=true") as info:
        read_folder(root, "labels.csv")
    assert "\n" not in str(info.value)
    with caplog.at_level(logging.WARNING, logger="faceattr.data.folder"):
        index = read_folder(root, "labels.csv", skip_corrupt=True)
    assert index.skipped_rows == 1 and len(index.filenames) == 2
    assert "skipped 1 bad row(s)" in caplog.text and "line" in caplog.text


def test_header_mistakes_and_names_the_outputs_cannot_carry_are_one_line(tmp_path):
    root = folder(tmp_path / "faces", [["a.png", "1"]], ["image", "Smiling"])
    with pytest.raises(UserError, match=r"has no 'path' column \(its header: image,Smiling\)"):
        read_folder(root, "labels.csv")
    with pytest.raises(UserError, match="no labels file .*other.csv"):
        read_folder(root, "other.csv")
    write_csv(root / "labels.csv", ["path", "Hair/Colour"], [["a.png", "1"]])
    with pytest.raises(UserError, match=r"attribute name 'Hair/Colour' .*rename the column, e.g. 'Hair_Colour'"):
        datamodule(root).setup()
    (root / "labels.csv").write_bytes("path,Lächeln\na.png,1\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_folder(root, "labels.csv")


def test_attribute_names_check():
    from faceattr.prediction import FACE_COLUMNS

    check_attribute_names(["Big Nose", "Lächeln", "黒髪", "5_o_Clock_Shadow", 'say "cheese"'], "labels.csv")
    assert {"path", "face", "present", "split", *FACE_COLUMNS} <= set(RESERVED_NAMES)
    for name, problem in [
        ("a,b", "cannot be a TensorBoard tag"),
        ("Male=1", "cannot be a TensorBoard tag"),
        ("line\nbreak", "cannot be a TensorBoard tag"),
        ("x|y", "cannot be a TensorBoard tag"),
        (" padded", "no spaces around it"),
        ("", "has no name"),
        ("present", "is reserved"),
    ]:
        with pytest.raises(UserError, match=problem):
            check_attribute_names(["ok", name], "labels.csv")
    with pytest.raises(UserError, match="'ok' .*appears twice"):
        check_attribute_names(["ok", "ok"], "labels.csv")


# ---- splits made, recorded and reused ----


def test_a_made_split_is_stratified_recorded_and_reused(tmp_path, caplog):
    rows = labelled_rows(100)
    root = folder(tmp_path / "faces", rows, HEADER)
    record = tmp_path / "run" / SPLIT_RECORD
    dm = datamodule(root, split_record=str(record), split_ratios=[0.6, 0.2, 0.2])
    dm.setup()
    assert [len(dm.splits[s]) for s in SPLITS] == [60, 20, 20]
    rare = {s: int((dm.splits[s].labels[:, 0] == 1).sum()) for s in SPLITS}
    assert rare == {"train": 6, "valid": 2, "test": 2}  # 10 positives of the rarest attribute, dealt 6/2/2
    recorded = list(csv.reader(record.open()))
    assert recorded[0] == ["path", "split"] and len(recorded) == 101
    by_path = {path: split for path, split in recorded[1:]}
    assert all(by_path[dm.splits["valid"].filenames[i].decode()] == "valid" for i in range(20))

    # Reused: another seed (or other ratios) changes nothing while the record is there ...
    again = datamodule(root, split_record=str(record), seed=7, split_ratios=[0.8, 0.1, 0.1])
    again.setup()
    for split in SPLITS:
        assert (again.splits[split].filenames == dm.splits[split].filenames).all()
    fresh = datamodule(root, seed=7)  # ... while without one the seed decides
    fresh.setup()
    assert not (fresh.splits["test"].filenames == dm.splits["test"].filenames[: len(fresh.splits["test"])]).all()

    # A row added since is left out (and said); a recorded row gone is one line.
    write_photos(root, ["photos/new.png"])
    write_csv(root / "labels.csv", HEADER, [*rows, ["photos/new.png", "0", "1", "1"]])
    with caplog.at_level(logging.WARNING, logger="faceattr.data.splits"):
        added = datamodule(root, split_record=str(record))
        added.setup()
    assert (
        sum(len(added.splits[s]) for s in SPLITS) == 100 and "1 image(s) of the labels file are not in" in caplog.text
    )
    write_csv(root / "labels.csv", HEADER, rows[1:])
    with pytest.raises(UserError, match=r"1 image\(s\) of the split record .* are no longer in the labels file"):
        datamodule(root, split_record=str(record)).setup()


def test_too_few_images_for_the_ratios_and_bad_ratios_are_one_line(tmp_path):
    root = folder(tmp_path / "faces", labelled_rows(3), HEADER)
    with pytest.raises(UserError, match=r"3 images are too few for data.split_ratios=\[0.9, 0.05, 0.05\]"):
        datamodule(root, split_ratios=[0.9, 0.05, 0.05]).setup()
    with pytest.raises(UserError, match="data.split_ratios=.*sum to 1"):
        datamodule(root, split_ratios=[0.5, 0.5])


# ---- k-fold ----


def _fold_sets(make, folds: int) -> list[dict[str, set[bytes]]]:
    sets = []
    for fold in range(folds):
        dm = make(fold)
        dm.setup()
        sets.append({split: set(dm.splits[split].filenames.tolist()) for split in SPLITS})
    return sets


def _check_folds(sets: list[dict[str, set[bytes]]], pool: set[bytes], test: set[bytes]) -> None:
    valid = [s["valid"] for s in sets]
    assert set().union(*valid) == pool and sum(len(v) for v in valid) == len(pool)  # disjoint and covering
    for s in sets:
        assert s["train"] == pool - s["valid"] and s["test"] == test  # the test split never moves
    sizes = [len(v) for v in valid]
    assert max(sizes) - min(sizes) <= 1


def test_folds_of_celeba_format_data_are_disjoint_cover_the_pool_and_stratify_the_rarest(synthetic_root):
    index = read_celeba(synthetic_root)
    names = index.filenames
    pool = set(names[(index.partitions <= 1).numpy()].tolist())
    test = set(names[(index.partitions == 2).numpy()].tolist())

    predicted = ["Eyeglasses", "Smiling", "Male", "Wearing_Hat"]  # stratified on the predicted attributes' rarest

    def make(fold):
        return CelebADataModule(
            root=str(synthetic_root), attributes=predicted, folds=5, fold=fold, image_size=16, num_workers=0
        )

    sets = _fold_sets(make, 5)
    _check_folds(sets, pool, test)
    from faceattr.data.splits import rarest_attributes

    in_pool = torch.from_numpy((index.partitions <= 1).numpy())
    columns = [index.attribute_names.index(name) for name in predicted]
    rarest = [columns[i] for i in rarest_attributes(index.labels[in_pool][:, columns])]
    for column, spread in zip(rarest, (1, 2)):  # the rarest within one between folds, the second within two
        positive = {name for name, label in zip(names.tolist(), index.labels[:, column].tolist()) if label == 1}
        counts = [len(s["valid"] & positive) for s in sets]
        assert sum(counts) >= 4 and max(counts) - min(counts) <= spread, (index.attribute_names[column], counts)
    # The folds depend on data.seed, not on the fold asked for.
    other = CelebADataModule(root=str(synthetic_root), folds=5, fold=0, seed=1, image_size=16, num_workers=0)
    other.setup()
    assert set(other.splits["valid"].filenames.tolist()) != sets[0]["valid"]


def test_folds_of_a_folder_are_recorded_and_the_fold_is_checked(tmp_path):
    root = folder(tmp_path / "faces", labelled_rows(50), HEADER)
    record = tmp_path / "run" / SPLIT_RECORD

    def make(fold):
        return datamodule(root, folds=3, fold=fold, split_record=str(record))

    sets = _fold_sets(make, 3)
    recorded = list(csv.DictReader(record.open()))
    pool = {row["path"].encode() for row in recorded if row["split"] != "test"}
    test = {row["path"].encode() for row in recorded if row["split"] == "test"}
    _check_folds(sets, pool, test)
    assert {row["fold"] for row in recorded if row["split"] == "test"} == {""}
    assert {(row["path"].encode(), int(row["fold"])) for row in recorded if row["fold"]} == {
        (name, fold) for fold, s in enumerate(sets) for name in s["valid"]
    }
    for folds, fold in ((1, 0), (3, 3)):
        with pytest.raises(UserError, match=rf"data.folds={folds} data.fold={fold}: expected folds >= 2"):
            datamodule(root, folds=folds, fold=fold)


# ---- group labels and a run's datamodule ----


def test_group_labels_follow_the_splits_order_and_a_missing_name_lists_the_columns(synthetic_root):
    dm = CelebADataModule(root=str(synthetic_root), attributes=["Smiling"], limit=30, image_size=16, num_workers=0)
    dm.setup()
    index = read_celeba(synthetic_root)
    groups = dm.group_labels("train", ["Male", "Young"])
    assert groups.dtype == torch.uint8 and groups.shape == (30, 2)
    rows = [list(index.filenames).index(name) for name in dm.splits["train"].filenames]
    columns = [index.attribute_names.index("Male"), index.attribute_names.index("Young")]
    assert torch.equal(groups, index.labels[rows][:, columns])
    assert dm.attribute_names == ("Smiling",) and len(dm.column_names) == 40
    with pytest.raises(UserError, match=r"unknown attribute\(s\) Gender in groups; valid names: 5_o_Clock_Shadow"):
        dm.group_labels("test", ["Gender"])


def test_a_balanced_training_loader_samples_the_groups(synthetic_root):
    dm = CelebADataModule(root=str(synthetic_root), balance_groups=["Eyeglasses"], image_size=16, num_workers=0)
    dm.setup()
    torch.manual_seed(3)
    seen = torch.cat([labels for _, labels, _ in dm.train_dataloader()])
    column = dm.attribute_names.index("Eyeglasses")
    rate = float(seen[:, column].float().mean())
    assert float(dm.splits["train"].labels[:, column].float().mean()) < 0.2 and 0.3 < rate < 0.7
    with pytest.raises(UserError, match="unknown attribute.* Glasses in data.balance_groups"):
        CelebADataModule(root=str(synthetic_root), balance_groups=["Glasses"], num_workers=0).setup()


def test_the_runs_datamodule_is_rebuilt_with_its_recorded_split_after_the_run_dir_moved(tmp_path):
    from faceattr.contract import ModelContract

    root = folder(tmp_path / "faces", labelled_rows(40), HEADER)
    old_run = tmp_path / "old_run"
    data = {
        "_target_": "faceattr.data.CelebADataModule",
        "root": str(root),
        "labels": "labels.csv",
        "split_record": str(old_run / SPLIT_RECORD),
        "image_size": 16,
        "num_workers": 0,
    }
    trained = CelebADataModule(**{k: v for k, v in data.items() if k != "_target_"})
    trained.setup()
    moved = tmp_path / "moved_run"
    moved.mkdir()
    shutil.move(old_run / SPLIT_RECORD, moved / SPLIT_RECORD)
    contract = ModelContract(
        backbone="b",
        attributes=("Half", "Rare"),
        image_size=(16, 16),
        crop=(178, 178),
        jpeg_scaling=True,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        preprocess_rule=2,
    )
    # Another seed would make another split: the record the moved run dir holds decides.
    rebuilt = run_datamodule({"data": {**data, "seed": 5}}, contract, {"num_workers": None}, run_dir=moved)
    rebuilt.setup()
    assert rebuilt.attribute_names == ("Half", "Rare") and rebuilt.align == "none"
    assert (rebuilt.splits["test"].filenames == trained.splits["test"].filenames).all()
    assert not (old_run / SPLIT_RECORD).exists()
    with pytest.raises(UserError, match="no run config.yaml beside it: pass data.root=<data folder>"):
        run_datamodule(None, contract)


# ---- a CelebA-format folder with its own columns, end to end ----

RENAMED = {"Smiling": "smile", "Male": "man", "Eyeglasses": "glasses", "Young": "young", "Wearing_Hat": "hat"}


def renamed_celeba(synthetic_root: Path, destination: Path) -> Path:
    """The generated folder with an attribute file of 5 columns, renamed."""
    root = Path(shutil.copytree(synthetic_root, destination))
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    header = lines[1].split()
    keep = [header.index(name) for name in RENAMED]
    rows = [line.split() for line in lines[2:]]
    text = [lines[0], " ".join(RENAMED.values())] + [" ".join([r[0], *(r[1 + i] for i in keep)]) for r in rows]
    (root / "list_attr_celeba.txt").write_text("\n".join(text) + "\n")
    return root


@pytest.mark.slow
def test_a_celeba_format_folder_with_its_own_columns_trains_evaluates_exports_and_serves(
    synthetic_root, tmp_path, monkeypatch
):
    from serve_process import SAMPLES, service_in_process

    from faceattr.contract import read_contract

    root = renamed_celeba(synthetic_root, tmp_path / "mine")
    names = list(RENAMED.values())
    run = tmp_path / "run"
    assert (
        run_main(
            "train.py", *TINY, f"data.root={root}", "trainer.max_epochs=1", f"hydra.run.dir={run}", tmp_path=tmp_path
        )
        == 0
    )
    assert list(json.loads((run / "run.json").read_text())["test_per_attribute"]) == names

    assert run_main("eval.py", f"ckpt={run}", "data.num_workers=0", tmp_path=tmp_path) == 0
    table = list(csv.DictReader((run / "eval" / "test_per_attribute.csv").open()))
    assert [row["attribute"] for row in table] == names

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))  # the store export.py writes into (cli_env)
    assert (
        run_main("export.py", f"ckpt={run}", "export=torchscript", "calibration.num_workers=0", tmp_path=tmp_path) == 0
    )
    meta = json.loads((run / "export" / "faceattr.json").read_text())
    assert list(read_contract(meta, "faceattr.json").attributes) == names
    with service_in_process(meta["tag"]) as client:
        answer = client.post("/predict", files={"image": ("a.jpg", (SAMPLES / "grace_hopper.jpg").read_bytes())})
    assert answer.status_code == 200, answer.text
    assert list(answer.json()["attributes"]) == names


def test_the_command_line_of_a_folder_run_is_checked_before_hydra_without_resolving_the_run_dir(tmp_path):
    """data.split_record names ${paths.output_dir} (Hydra's run dir): the command-line check that runs before Hydra
    cannot resolve it and must not die on it; the folder's own mistake is the one line."""
    proc = run_script("train.py", "data=folder", f"data.root={tmp_path / 'nowhere'}", tmp_path=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: data.root {tmp_path / 'nowhere'} is not a folder: point it at the folder holding the "
        "images and the CSV"
    ], proc.stderr
