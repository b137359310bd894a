"""The user mistakes that used to end in a traceback, each through its real entry script (conftest.run_script: the
script in this process, with its argv and exit status): one line ``error: ...``, exit status 2, and nothing slow
run before the check that could fail first.

1. a knob out of its bound (``data.batch_size=0``, ``data.num_workers=-1``, ...): train's schema has eval's bounds;
2. an eval or export ``output_dir`` that cannot be written (a read-only mount, a parent that is a file, no
   permission), checked before the test loop and before calibration;
3. a ``faceattr.json`` in the store that parses but lacks the contract's keys, for predict.py and the service;
4. an annotation file saved as UTF-16 or Latin-1;
5. ``ckpt_path=`` of a run trained with another optimizer or LR scheduler;
6. several ``image`` parts in one ``POST /predict``: 400 naming ``/predict_batch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import torch
from conftest import TINY, run_script
from PIL import Image

# -- helpers ---------------------------------------------------------------------------------------------------------


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The script's one line ``error: ...`` (without the prefix), after checking exit status 2 and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: "), lines
    return lines[0].removeprefix("error: ")


def never(what: str):
    """A replacement for a slow step that must not run (the check before it failed first)."""

    def called(*args, **kwargs):
        raise AssertionError(f"{what} ran before the mistake was reported")

    return called


@contextlib.contextmanager
def read_only_mount(where: Path):
    """A real read-only file system (a tmpfs mounted ``ro``) at ``where``; skips, with the reason shown in the summary
    (``-ra``), where mounting is not allowed (not root, no mount command, a container without the capability)."""
    where.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)], capture_output=True
        )
    except FileNotFoundError:
        pytest.skip("no mount command: the injected read-only twin covers this")
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a read-only tmpfs here ({mounted.stderr.decode().strip()}); the injected twin covers it"
        )
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def refusing_mkdir(monkeypatch, below: Path, code: int) -> None:
    """``os.mkdir`` fails with ``code`` (EACCES, EROFS) for a new folder in ``below``, as a folder the user may not
    write or a read-only mount makes it fail (tests run as root, which no permission bits stop)."""
    real = os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(path).parent == below:
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)


# -- 1. knobs out of their bounds ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batch_size=0", "data.batch_size=0: expected an integer >= 1"),
        ("data.num_workers=-1", "data.num_workers=-1: expected an integer >= 0 (0: load in the main process)"),
        ("data.eval_batch_size=0", "data.eval_batch_size=0: expected null or an integer >= 1"),
        ("data.limit=0", "data.limit=0: expected null or an integer >= 1 (images)"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: expected null or an integer >= 1 (or -1: no limit)"),
        ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch=0: expected null or an integer >= 1"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1: expected null or a number >= 0 (0: the weights do not move)"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1: expected null or a number >= 0"),
        ("model.drop_rate=1.0", "model.drop_rate=1.0: expected null or a number in [0, 1)"),
        ("seed=-1", "seed=-1: expected null or an integer in [0, 4294967295]"),
    ],
)
def test_a_knob_out_of_its_bound_is_one_line_before_the_run_starts(override, message, tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    proc = run_script(
        "train.py",
        *TINY,
        f"data.root={synthetic_root}",
        override,
        f"hydra.run.dir={run_dir}",
        tmp_path=tmp_path,
        check=False,
    )
    assert one_error_line(proc) == message
    assert not run_dir.exists()  # refused on the command line: Hydra did not even create the run dir


def test_train_and_eval_share_one_definition_of_each_bound(tmp_path, tiny_run):
    """eval's data.num_workers and data.eval_batch_size are train's: the same words from the same Bound."""
    from faceattr.config.schemas import SCHEMAS, settings
    from faceattr.constraints import problem_with

    train, evaluation = settings(SCHEMAS["train"]), settings(SCHEMAS["eval"])
    for key, bad in (("data.num_workers", -1), ("data.eval_batch_size", 0)):
        assert problem_with(train[key].field, bad).removeprefix("expected null or ").removeprefix("expected ") == (
            problem_with(evaluation[key].field, bad).removeprefix("expected null or ")
        )
    proc = run_script("eval.py", f"ckpt={tiny_run}", "data.num_workers=-1", tmp_path=tmp_path, check=False)
    assert one_error_line(proc) == "data.num_workers=-1: expected null or an integer >= 0 (0: load in the main process)"


# -- 2. an output dir that cannot be written -------------------------------------------------------------------------


def _eval(tmp_path, tiny_run, output_dir: Path, monkeypatch) -> str:
    import faceattr.evaluation as evaluation

    monkeypatch.setattr(evaluation, "run_datamodule", never("building the data module"))
    monkeypatch.setattr(evaluation, "_trainer", never("the test loop"))
    proc = run_script("eval.py", f"ckpt={tiny_run}", f"output_dir={output_dir}", tmp_path=tmp_path, check=False)
    return one_error_line(proc)


def _export(tmp_path, tiny_run, output_dir: Path, monkeypatch) -> str:
    import faceattr.export.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_calibrate", never("calibration"))
    monkeypatch.setattr(pipeline, "_test_metrics", never("the test metrics"))
    proc = run_script(
        "export.py", f"ckpt={tiny_run}", f"output_dir={output_dir}", "store=false", tmp_path=tmp_path, check=False
    )
    return one_error_line(proc)


ENTRIES = {"eval": _eval, "export": _export}


@pytest.mark.parametrize("entry", ENTRIES)
def test_an_output_dir_below_a_file_is_refused_before_the_slow_steps(entry, tmp_path, tiny_run, monkeypatch):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder was meant to go\n")
    line = ENTRIES[entry](tmp_path, tiny_run, blocker / "out", monkeypatch)
    assert line == (
        f"{blocker} is a file, not a directory (writing the output directory {blocker / 'out'}): move it away or set "
        "output_dir=..."
    )
    line = ENTRIES[entry](tmp_path, tiny_run, blocker, monkeypatch)  # the output dir itself is the file
    assert line.startswith(f"{blocker} is a file, not a directory (writing the output directory {blocker}): ")


@pytest.mark.parametrize("entry", ENTRIES)
def test_an_output_dir_on_a_read_only_mount_is_refused_before_the_slow_steps(entry, tmp_path, tiny_run, monkeypatch):
    with read_only_mount(tmp_path / "ro") as mount:
        line = ENTRIES[entry](tmp_path, tiny_run, mount / "out", monkeypatch)
    assert line == (
        f"read-only file system writing the output directory {mount / 'out'}: set output_dir=... to a writable "
        "directory"
    )


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
@pytest.mark.parametrize("entry", ENTRIES)
def test_an_output_dir_that_cannot_be_created_is_refused_injected(entry, code, tmp_path, tiny_run, monkeypatch):
    """The read-only mount's twin that runs anywhere, and a folder the user may not write (EACCES: tests run as root,
    so it is injected)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    refusing_mkdir(monkeypatch, locked, code)
    line = ENTRIES[entry](tmp_path, tiny_run, locked / "deep" / "out", monkeypatch)
    assert (
        line
        == {
            errno.EROFS: f"read-only file system writing the output directory {locked / 'deep' / 'out'}: set "
            "output_dir=... to a writable directory",
            errno.EACCES: f"permission denied writing the output directory {locked / 'deep' / 'out'}: make {locked} "
            "writable or set output_dir=...",
        }[code]
    )


# -- 3. a faceattr.json that lacks the contract ----------------------------------------------------------------------

BROKEN_METADATA = {
    "empty": "{}",
    "empty contract": '{"contract": {}}',
    "contract without keys": '{"contract": {"format_version": %d, "preprocess_rule": %d}}',
}


@pytest.fixture(params=list(BROKEN_METADATA))
def broken_model(request):
    """A model in the BentoML store whose faceattr.json parses but lacks what the contract needs: its tag."""
    import bentoml

    from faceattr.contract import FORMAT_VERSION
    from faceattr.preprocess import RULE_VERSION

    text = BROKEN_METADATA[request.param]
    if "%d" in text:
        text %= (FORMAT_VERSION, RULE_VERSION)
    with bentoml.models.create(f"broken-{secrets.token_hex(4)}") as model:
        (Path(model.path) / "faceattr.json").write_text(text)
    yield str(model.tag), request.param
    bentoml.models.delete(model.tag)


def test_predict_refuses_a_stored_model_without_its_contract_in_one_line(broken_model, tmp_path):
    tag, case = broken_model
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 64), (120, 90, 60)).save(photos / "a.jpg")
    out = tmp_path / "out.csv"
    proc = run_script("predict.py", f"model={tag}", f"images={photos}", f"out={out}", tmp_path=tmp_path, check=False)
    line = one_error_line(proc)
    assert line.startswith(f"model {tag}") and "export it again" in line, line
    if case == "contract without keys":
        assert "backbone" in line or "attributes" in line, line  # says which key is missing
    assert not out.exists()


def test_the_service_refuses_a_stored_model_without_its_contract_in_one_line(broken_model):
    """What the service reads at start-up (``served_model``, inside its one-line refusal): a ModelError, one line."""
    from faceattr.serve.config import load_serve_config
    from faceattr.serve.runtime import ModelError, served_model

    tag, _ = broken_model
    with pytest.raises(ModelError) as error:
        served_model(load_serve_config({}), tag)
    assert str(error.value).startswith(f"model {tag}") and "\n" not in str(error.value)


# -- 4. annotation files that are not UTF-8 --------------------------------------------------------------------------


def _copy_with(root: Path, synthetic_root: Path, name: str, encoding: str, accent: bool = True) -> Path:
    """A copy of the generated CelebA folder whose annotation file ``name`` is saved in ``encoding`` (with an accented
    image name, which Latin-1 saves as one byte, unless not ``accent``)."""
    root.mkdir()
    for entry in synthetic_root.iterdir():
        if entry.is_dir():
            (root / entry.name).symlink_to(entry)
        else:
            shutil.copy(entry, root / entry.name)
    path = root / name
    text = path.read_text(encoding="utf-8")
    text = text.replace("000001.jpg", "000001é.jpg") if accent else text
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize(
    "encoding, message",
    [
        ("utf-16", "is saved as UTF-16, not UTF-8 text: save it as UTF-8"),
        ("latin-1", "is not UTF-8 text (byte 0xe9 on line 3: Latin-1 or another legacy encoding?): save it as UTF-8"),
    ],
)
def test_an_annotation_file_in_another_encoding_is_one_line_naming_it(encoding, message, tmp_path, synthetic_root):
    path = _copy_with(tmp_path / "celeba", synthetic_root, "list_attr_celeba.txt", encoding)
    proc = run_script(
        "train.py",
        *TINY,
        f"data.root={path.parent}",
        f"hydra.run.dir={tmp_path / 'run'}",
        tmp_path=tmp_path,
        check=False,
    )
    line = one_error_line(proc)
    assert line.startswith(f"{path} {message}"), line


def test_eval_names_a_partition_file_saved_as_latin_1(tmp_path, tiny_run, synthetic_root):
    path = _copy_with(tmp_path / "celeba", synthetic_root, "list_eval_partition.txt", "latin-1")
    proc = run_script("eval.py", f"ckpt={tiny_run}", f"data.root={path.parent}", tmp_path=tmp_path, check=False)
    assert one_error_line(proc).startswith(f"{path} is not UTF-8 text (byte 0xe9 on line 1")


def test_a_utf8_byte_order_mark_is_read(tmp_path, synthetic_root):
    from faceattr.data.celeba import read_celeba

    path = _copy_with(tmp_path / "celeba", synthetic_root, "list_attr_celeba.txt", "utf-8-sig", accent=False)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    index = read_celeba(path.parent)
    assert index.filenames[0].decode() == "000001.jpg" and len(index.filenames) == 160
    assert index.attribute_names == read_celeba(synthetic_root).attribute_names


# -- 5. ckpt_path= of a run with another optimizer or scheduler -------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, problem",
    [
        (["optimizer=sgd"], "it was trained with the optimizer Adam or AdamW but the config has SGD"),
        (["scheduler=none"], "it was trained with an LR scheduler but the config has none (scheduler=none)"),
    ],
)
def test_ckpt_path_of_another_optimizer_is_one_line_before_fit(
    overrides, problem, tmp_path, tiny_run, synthetic_root, monkeypatch
):
    import lightning as L

    monkeypatch.setattr(L.Trainer, "fit", never("fit"))
    last = tiny_run / "checkpoints" / "last.ckpt"
    proc = run_script(
        "train.py",
        *TINY,
        f"data.root={synthetic_root}",
        f"ckpt_path={last}",
        *overrides,
        f"hydra.run.dir={tmp_path / 'run'}",
        tmp_path=tmp_path,
        check=False,
    )
    assert one_error_line(proc) == f"ckpt_path={last}: {problem}; use the run's own settings (or resume=<run dir>)"


def test_the_optimizer_check_allows_what_another_torch_version_saves(tiny_run):
    """A checkpoint of the same optimizer whose parameter groups lack a setting a newer torch added (AdamW's
    ``decoupled_weight_decay``) fits; the run's own optimizer fits as it is."""
    from functools import partial

    from faceattr.checkpoint import _optimizer_problem, read_checkpoint
    from faceattr.model.schedulers import cosine_with_warmup

    state = read_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    adamw, cosine = partial(torch.optim.AdamW, lr=1e-3), partial(cosine_with_warmup)
    assert _optimizer_problem(state, adamw, cosine) is None
    for group in state["optimizer_states"][0]["param_groups"]:
        group.pop("decoupled_weight_decay", None)
        group.pop("fused", None)
    assert _optimizer_problem(state, adamw, cosine) is None
    assert "SGD" in _optimizer_problem(state, partial(torch.optim.SGD, lr=0.1, momentum=0.9), cosine)
    del state["optimizer_states"]
    assert _optimizer_problem(state, adamw, cosine).startswith("it holds the weights only")


# -- 6. several images on /predict -----------------------------------------------------------------------------------


def _png() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 150, 100)).save(buffer, format="PNG")
    return buffer.getvalue()


SEVERAL = (
    "500 files in field 'image': /predict takes one image per request; send several images to /predict_batch "
    "(field images, e.g. curl -F images=@a.jpg -F images=@b.jpg http://HOST/predict_batch)"
)


def test_500_image_parts_on_predict_get_400_naming_predict_batch_from_the_upload_reader():
    """The upload reader with the service's two routes, in this process: the endpoint behind it never runs."""
    from faceattr.serve.schemas import upload_inputs, upload_route
    from faceattr.serve.upload_guard import UploadGuard

    reached = []

    async def endpoint(scope, receive, send):
        reached.append(scope["path"])

    single, batch = upload_inputs("center")
    guard = UploadGuard(
        endpoint, 10_000_000, {"/predict": upload_route(single), "/predict_batch": upload_route(batch, 8)}
    )

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://HOST") as client:
            return await client.post("/predict", files=[("image", (f"{i}.png", _png())) for i in range(500)])

    answer = asyncio.run(send())
    assert answer.status_code == 400 and answer.json() == {"error": SEVERAL}, answer.text
    assert reached == []


@pytest.mark.slow
def test_500_image_parts_on_predict_get_400_from_the_served_model(shared_server):
    answer = httpx.post(
        shared_server["url"] + "/predict", files=[("image", (f"{i}.png", _png())) for i in range(500)], timeout=60
    )
    assert answer.status_code == 400 and answer.json() == {"error": SEVERAL}, answer.text
    assert httpx.get(shared_server["url"] + "/readyz", timeout=10).status_code == 200
