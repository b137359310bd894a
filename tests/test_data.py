"""The CelebA data path on generated folders: both layouts, labels, partitions, subsets and every bad-data error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from faceattr.attributes import CELEBA_ATTRIBUTES
from faceattr.data import CelebADataModule, read_celeba
from faceattr.data.synthetic import write_kaggle_layout
from faceattr.errors import UserError


def raw_rows(root: Path) -> dict[str, list[int]]:
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()[2:]
    return {parts[0]: [int(v) for v in parts[1:]] for parts in (line.split() for line in lines)}


def raw_partitions(root: Path) -> dict[str, int]:
    return {
        name: int(p)
        for name, p in (line.split() for line in (root / "list_eval_partition.txt").read_text().splitlines())
    }


@pytest.fixture(scope="module")
def kaggle_root(synthetic_root, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("kaggle") / "celeba"
    write_kaggle_layout(synthetic_root, dst)
    return dst


def datamodule(root: Path, **kwargs) -> CelebADataModule:
    kwargs.setdefault("num_workers", 0)
    return CelebADataModule(root=str(root), image_size=32, batch_size=8, **kwargs)


def test_labels_map_minus_one_to_zero_in_file_order(synthetic_root):
    index = read_celeba(synthetic_root)
    rows = raw_rows(synthetic_root)
    assert index.layout == "original" and index.attribute_names == CELEBA_ATTRIBUTES
    assert index.labels.dtype == torch.uint8 and set(index.labels.unique().tolist()) == {0, 1}
    for i in (0, 7, len(rows) - 1):
        name = index.filenames[i].decode()
        assert index.labels[i].tolist() == [1 if v == 1 else 0 for v in rows[name]]
        assert int(index.partitions[i]) == raw_partitions(synthetic_root)[name]


def test_both_layouts_give_the_same_data(synthetic_root, kaggle_root):
    original, kaggle = read_celeba(synthetic_root), read_celeba(kaggle_root)
    assert kaggle.layout == "kaggle" and kaggle.image_dir == kaggle_root / "img_align_celeba" / "img_align_celeba"
    assert (original.filenames == kaggle.filenames).all()
    assert torch.equal(original.labels, kaggle.labels) and torch.equal(original.partitions, kaggle.partitions)


def test_torchvision_style_parent_folder_is_accepted(synthetic_root):
    assert read_celeba(synthetic_root.parent).image_dir == synthetic_root / "img_align_celeba"


@pytest.mark.parametrize("layout", ["original", "kaggle"])
def test_datamodule_batches_follow_official_partitions(synthetic_root, kaggle_root, layout):
    root = synthetic_root if layout == "original" else kaggle_root
    dm = datamodule(root)
    dm.setup()
    parts = raw_partitions(synthetic_root)
    for split, code in (("train", 0), ("valid", 1), ("test", 2)):
        assert len(dm.splits[split]) == sum(1 for p in parts.values() if p == code)
    images, labels, skipped = next(iter(dm.val_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32)
    assert labels.shape == (8, 40) and skipped == 0
    first = dm.splits["valid"].filenames[0].decode()
    assert labels[0].tolist() == [1 if v == 1 else 0 for v in raw_rows(synthetic_root)[first]]


def test_attribute_subset_keeps_the_requested_order(synthetic_root):
    dm = datamodule(synthetic_root, attributes=["Smiling", "Male"])
    dm.setup()
    index = read_celeba(synthetic_root)
    _, labels = dm.splits["train"][0]
    name = dm.splits["train"].filenames[0].decode()
    row = index.labels[list(index.filenames).index(name.encode())]
    assert labels.tolist() == [int(row[CELEBA_ATTRIBUTES.index("Smiling")]), int(row[CELEBA_ATTRIBUTES.index("Male")])]


def test_unknown_attribute_lists_the_valid_names(synthetic_root):
    with pytest.raises(UserError, match=r"Smilling.*valid names: 5_o_Clock_Shadow, Arched_Eyebrows"):
        datamodule(synthetic_root, attributes=["Smilling"]).setup()


def test_limit_subsamples_training_deterministically(synthetic_root):
    dm = datamodule(synthetic_root, limit=40)
    dm.setup()
    assert len(dm.splits["train"]) == 40
    again = datamodule(synthetic_root, limit=40)
    again.setup()
    assert (again.splits["train"].filenames == dm.splits["train"].filenames).all()
    other = datamodule(synthetic_root, limit=40, seed=1)
    other.setup()
    assert not (other.splits["train"].filenames == dm.splits["train"].filenames).all()


def test_train_augmentation_applies_to_train_only(synthetic_root):
    from torchvision.transforms import v2

    dm = datamodule(synthetic_root, train_augment=[v2.RandomHorizontalFlip(p=1.0)])
    dm.setup()
    plain = datamodule(synthetic_root)
    plain.setup()
    assert torch.equal(dm.splits["train"][0][0], plain.splits["train"][0][0].flip(-1))
    assert torch.equal(dm.splits["valid"][0][0], plain.splits["valid"][0][0])


# ---- bad data: each broken folder is built from the generated one ----


@pytest.fixture
def broken(synthetic_root, tmp_path) -> Path:
    """A private copy of the generated folder to break."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "celeba"))


def test_missing_root_names_the_path_and_the_way_out(tmp_path):
    with pytest.raises(UserError, match=r"data.root .*nowhere does not exist.*data=synthetic") as info:
        read_celeba(tmp_path / "nowhere")
    assert "\n" not in str(info.value)


def test_folder_without_annotations_says_what_it_expected(tmp_path):
    with pytest.raises(UserError, match="list_attr_celeba.txt .*list_attr_celeba.csv"):
        read_celeba(tmp_path)


def test_missing_partition_file_is_named(broken):
    (broken / "list_eval_partition.txt").unlink()
    with pytest.raises(UserError, match="missing .*list_eval_partition.txt"):
        read_celeba(broken)


def test_attribute_value_other_than_plus_minus_one_names_line_and_column(broken):
    path = broken / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    parts = lines[4].split()
    parts[3] = "0"
    lines[4] = " ".join(parts)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"list_attr_celeba.txt line 5, column 4: .* -1 or 1, found '0'"):
        read_celeba(broken)


def test_row_with_missing_values_is_named(broken):
    path = broken / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[3] = " ".join(lines[3].split()[:-2])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"line 4: expected 40 attribute values, found 38"):
        read_celeba(broken)


def test_annotation_files_that_disagree_are_reported(broken):
    path = broken / "list_eval_partition.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(UserError, match=r"3 image\(s\) .* have no row in .*list_eval_partition.txt"):
        read_celeba(broken)


def test_wrong_image_count_line_is_reported(broken):
    path = broken / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[0] = "999"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="line 1 says 999 images but the file has 160 rows"):
        read_celeba(broken)


def test_empty_partition_is_reported(broken):
    path = broken / "list_eval_partition.txt"
    path.write_text("".join(f"{name} 0\n" for name in raw_partitions(broken)))
    with pytest.raises(UserError, match="the valid partition .* is empty"):
        datamodule(broken).setup()


def _first_valid_image(root: Path) -> Path:
    name = next(n for n, p in raw_partitions(root).items() if p == 1)
    return root / "img_align_celeba" / name


@pytest.mark.parametrize("damage", ["corrupt", "empty", "missing"])
def test_bad_image_stops_with_its_path_by_default(broken, damage):
    image = _first_valid_image(broken)
    if damage == "corrupt":
        image.write_bytes(image.read_bytes()[:200] + b"\x00garbage" * 10)
    elif damage == "empty":
        image.write_bytes(b"")
    else:
        image.unlink()
    dm = datamodule(broken)
    dm.setup()
    with pytest.raises(UserError, match=rf"image .*{image.name} is .*data.skip_corrupt=true"):
        next(iter(dm.val_dataloader()))


def test_skip_corrupt_drops_and_counts_bad_images(broken):
    image = _first_valid_image(broken)
    image.write_bytes(b"not a jpeg")
    dm = datamodule(broken, skip_corrupt=True)
    dm.setup()
    batches = list(dm.val_dataloader())
    assert sum(skipped for _, _, skipped in batches) == 1
    assert sum(len(images) for images, _, _ in batches) == len(dm.splits["valid"]) - 1


def test_worker_process_errors_keep_the_one_line_message(broken):
    from faceattr.errors import find_user_error, one_line

    _first_valid_image(broken).write_bytes(b"")
    dm = datamodule(broken, num_workers=1, persistent_workers=False)
    dm.setup()
    with pytest.raises(Exception) as info:
        next(iter(dm.val_dataloader()))
    line = one_line(find_user_error(info.value))
    assert line.startswith("image ") and "skip_corrupt" in line and "\n" not in line
    # Free the loader now (its traceback holds it): its worker then stops at once, where the garbage collector's
    # shutdown of it, in whichever later test it runs, waits 5 s for the worker.
    info.value.__traceback__ = None
    del info


def test_limit_shrinks_training_only_and_the_test_split_is_always_whole(synthetic_root):
    from faceattr.data import CelebADataModule
    from faceattr.data.celeba import SPLITS, read_celeba

    partitions = read_celeba(synthetic_root).partitions
    whole = {split: int((partitions == code).sum()) for split, code in SPLITS.items()}
    limited = CelebADataModule(root=str(synthetic_root), limit=20, num_workers=0)
    limited.setup("fit")
    sizes = {split: len(images) for split, images in limited.splits.items()}
    assert sizes == {"train": 20, "valid": whole["valid"], "test": whole["test"]}
    both = CelebADataModule(root=str(synthetic_root), limit=20, val_limit=5, num_workers=0)
    both.setup("fit")
    assert [len(both.splits[s]) for s in ("train", "valid", "test")] == [20, 5, whole["test"]]
    with pytest.raises(UserError, match="data.val_limit=0 must be at least 1"):
        CelebADataModule(root=str(synthetic_root), val_limit=0)


def test_the_subsample_has_its_own_seed_so_a_seed_sweep_keeps_the_images():
    from conftest import REPO
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        seeds = [compose("train", overrides=[f"seed={seed}", "data.limit=100"]).data.seed for seed in (1, 2)]
    assert seeds[0] == seeds[1] == 0


def test_attributes_null_are_the_files_columns_in_file_order(synthetic_root, broken):
    dm = datamodule(synthetic_root)
    dm.setup()
    assert dm.attribute_names == dm.column_names == CELEBA_ATTRIBUTES  # the generated file: the official 40
    path = broken / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    renamed = [f"mine_{i:02d}" for i in reversed(range(40))]
    lines[1] = " ".join(renamed)
    path.write_text("\n".join(lines) + "\n")
    dm = datamodule(broken)
    dm.setup()
    assert dm.attribute_names == tuple(renamed)
    original = datamodule(synthetic_root)
    original.setup()
    assert torch.equal(dm.splits["train"].labels, original.splits["train"].labels)  # same values, new names
    lines[1] = " ".join(["Hair/Colour", *renamed[1:]])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"attribute name 'Hair/Colour' \(attribute 1 of .*list_attr_celeba.txt\)"):
        datamodule(broken).setup()
