"""faceattr/run_record.py: the record written is the record read back, and what older versions (or a crash) left in a
run dir still reads: no file, an unreadable file, the earlier format with ``val_auroc_best``."""

from __future__ import annotations

import json

import pytest

from faceattr.run_record import RunRecord, Status, read_run_record


def test_a_record_reads_back_as_written_with_every_field_in_the_file(tmp_path):
    record = RunRecord(
        Status.COMPLETED,
        overrides=["optimizer.lr=0.1"],
        backbone="test_resnet",
        monitor="val/auroc",
        best_score=0.91,
        best_checkpoint="/runs/a/checkpoints/epoch001.ckpt",
        test={"test/auroc": 0.9, "test/acc": None},
        test_per_attribute={"Smiling": {"auroc": 0.95}},
        epochs=2,
        global_step=6,
        num_parameters=1234,
        wall_time_s=3.5,
    )
    record.write(tmp_path)
    written = json.loads((tmp_path / "run.json").read_text())
    assert written["status"] == "completed" and written["tested_checkpoint"] is None and written["error"] is None
    assert set(written) == set(RunRecord.__dataclass_fields__)  # one schema: every field, null when unknown
    assert "val_auroc_best" not in written  # one best score
    assert read_run_record(tmp_path) == record
    assert not list(tmp_path.glob(".*"))  # atomic: no temporary file left beside it


def test_missing_and_unreadable_records(tmp_path):
    assert read_run_record(tmp_path) is None
    (tmp_path / "run.json").write_text('{"status": "compl')  # a writer killed mid-write, before atomic writes
    broken = read_run_record(tmp_path)
    assert broken.status is Status.FAILED and broken.error.startswith("unreadable run.json: ")
    (tmp_path / "run.json").write_text("[1, 2]")
    assert read_run_record(tmp_path).error == "unreadable run.json: not a JSON object"
    (tmp_path / "run.json").write_text('{"status": "exploded"}')
    odd = read_run_record(tmp_path)
    assert odd.status is Status.FAILED and "unknown status 'exploded'" in odd.error


@pytest.mark.parametrize(
    "old, monitor, best",
    [
        # The earlier format: best_score and val_auroc_best side by side.
        ({"monitor": "val/auroc", "best_score": 0.8, "val_auroc_best": 0.8}, "val/auroc", 0.8),
        # Another monitor: its best_score stays; val/auroc's best is the events' (faceattr/sweep/runs.py).
        ({"monitor": "val/loss", "best_score": 0.3, "val_auroc_best": 0.8}, "val/loss", 0.3),
        # No best_score (a run without a ModelCheckpoint, once): val_auroc_best is the default monitor's best.
        ({"best_score": None, "val_auroc_best": 0.7}, "val/auroc", 0.7),
    ],
)
def test_records_of_the_earlier_format_read_with_one_best_score(tmp_path, old, monitor, best):
    (tmp_path / "run.json").write_text(json.dumps({"status": "completed", "epochs": 3, "extra": 1} | old))
    record = read_run_record(tmp_path)
    assert (record.status, record.monitor, record.best_score, record.epochs) == (Status.COMPLETED, monitor, best, 3)


def test_wrong_types_read_as_unknown(tmp_path):
    (tmp_path / "run.json").write_text(
        json.dumps({"status": "failed", "overrides": "lr=1", "epochs": "3", "best_score": "nan", "test": [1]})
    )
    record = read_run_record(tmp_path)
    assert (record.overrides, record.epochs, record.best_score, record.test) == ([], None, None, {})


def test_statuses():
    assert [s for s in Status if s.done] == [Status.COMPLETED, Status.PRUNED]
    assert f"{Status.PRUNED}" == "pruned" and Status("running") is Status.RUNNING


def test_a_record_older_than_tested_checkpoint_had_the_best_one_tested(tmp_path):
    old = {"status": "completed", "best_checkpoint": "/r/best.ckpt", "test": {"test/auroc": 0.9}}
    (tmp_path / "run.json").write_text(json.dumps(old))
    assert read_run_record(tmp_path).tested_checkpoint == "/r/best.ckpt"
    (tmp_path / "run.json").write_text(json.dumps(old | {"tested_checkpoint": None}))  # the final weights were
    assert read_run_record(tmp_path).tested_checkpoint is None
