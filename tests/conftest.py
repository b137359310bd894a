"""Shared fixtures: generated CelebA-format data and one tiny trained run, made once per test session."""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict, read_write

from faceattr.config.schemas import register_schemas
from faceattr.resolvers import register_resolvers

REPO = Path(__file__).resolve().parents[1]
# In-process tests compose and instantiate the configs as train.py does: with the project's resolvers and config
# schemas registered.
register_resolvers()
register_schemas()

# Tiny, fast settings shared by the end-to-end runs: test_resnet at 32x32, synchronous loading, no progress bar.
TINY = (
    "model=tiny_resnet",
    "data.image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer=cpu",
    "callbacks.progress_bar=null",
    "callbacks.pictures=null",
)


def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: offline, CPU only, caches under ``tmp_path``."""
    env = dict(os.environ)
    env.update(
        FACEATTR_CACHE=str(tmp_path / "cache"),
        BENTOML_HOME=str(tmp_path / "bentoml"),
        HF_HUB_OFFLINE="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONUNBUFFERED="1",
        HYDRA_FULL_ERROR="0",
    )
    return env


def run_cli(script: str, *args: str, tmp_path: Path, check: bool = True, timeout: int = 300):
    """Run ``python <script> args...`` from the repo root; return the CompletedProcess (text output)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=REPO,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


@contextlib.contextmanager
def captured_fds() -> Iterator[list[str]]:
    """Capture file descriptors 1 and 2 (this process's ``sys.stdout``/``sys.stderr`` and the processes it starts);
    the list it yields holds their text, [stdout, stderr], once the block ends."""
    import tempfile

    files = [tempfile.TemporaryFile() for _ in range(2)]
    streams, fds = (sys.stdout, sys.stderr), [os.dup(1), os.dup(2)]
    output: list[str] = []
    for stream in streams:
        stream.flush()
    try:
        for fd, file in zip((1, 2), files, strict=True):
            os.dup2(file.fileno(), fd)
        sys.stdout, sys.stderr = (open(fd, "w", buffering=1, closefd=False) for fd in (1, 2))  # noqa: SIM115
        yield output
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams
        for fd, saved in zip((1, 2), fds, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        for file in files:
            file.seek(0)
            output.append(file.read().decode(errors="replace"))
            file.close()


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """Put the loggers that exist now back as they were: level, handlers and flags (Hydra's logging setup gives the
    root logger its own handlers, one writing to the job's log file); the handlers added to them meanwhile are
    closed. Loggers made meanwhile (a library imported for the first time) keep what they set up."""
    import logging

    known = logging.Logger.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(logger for logger in known if isinstance(logger, logging.Logger))]
    saved = [(logger, logger.level, list(logger.handlers), logger.propagate, logger.disabled) for logger in loggers]
    try:
        yield
    finally:
        for logger, level, handlers, propagate, disabled in saved:
            for handler in set(logger.handlers) - set(handlers):
                handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled


def run_script(script: str, *args: str, tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess:
    """:func:`run_cli` without a new interpreter: ``python <script> args...`` run as ``__main__`` in this process
    (``runpy``), with that ``sys.argv``, :func:`cli_env`'s environment and the repo root as working dir, so Hydra
    parses the command line, sets up logging, writes ``.hydra/`` and runs the sweep (launcher, sweeper, callbacks)
    as in the script's own process, minus its seconds of imports. Returns a CompletedProcess: the exit status
    (``SystemExit``'s code; 1 after an uncaught exception, its traceback on stderr) and what was written to file
    descriptors 1 and 2 meanwhile. What the script changes in the process (argv, environment, working dir, logging,
    Hydra's singletons) is restored afterwards. Not covered: interpreter start-up and import-time output, which the
    tests calling :func:`run_cli` cover."""
    import runpy
    import traceback

    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    path = REPO / script
    saved = sys.argv, list(sys.path), dict(os.environ), os.getcwd(), HydraConfig.instance().cfg
    status: int | str | None = 0
    with restored_logging(), captured_fds() as output:
        try:
            sys.argv, sys.path[0:0] = [str(path), *args], [str(path.parent)]  # as `python <script>` sets them
            os.environ.update(cli_env(tmp_path))
            os.chdir(REPO)
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as exit_:
            status = exit_.code
        except Exception:  # the interpreter's way: the traceback on stderr, status 1
            traceback.print_exc()
            status = 1
        finally:
            GlobalHydra.instance().clear()
            sys.argv, sys.path[:], environ, cwd, HydraConfig.instance().cfg = saved
            os.environ.clear()
            os.environ.update(environ)
            os.chdir(cwd)
        if isinstance(status, str):  # sys.exit("message"): the message on stderr, status 1
            print(status, file=sys.stderr)
            status = 1
    proc = subprocess.CompletedProcess([script, *args], status or 0, *output)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


@contextlib.contextmanager
def hydra_job(config_name: str, *overrides: str, tmp_path: Path) -> Iterator[DictConfig]:
    """The config that ``@hydra.main`` hands an entry script's ``main`` for the single run ``python
    <config_name>.py <overrides>``, with Hydra's job state set as Hydra's ``run_job`` sets it (``HydraConfig``: the
    overrides, group choices and the job's output dir) and the environment of :func:`cli_env` (caches under
    ``tmp_path``); that state and ``os.environ`` are restored afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    saved, environ = HydraConfig.instance().cfg, dict(os.environ)
    try:
        os.environ.update(cli_env(tmp_path))
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            config = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(config)
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(str(config.hydra.run.dir))
        HydraConfig.instance().set_config(config)
        task_config = copy.deepcopy(config)
        with read_write(task_config), open_dict(task_config):
            del task_config["hydra"]
        yield task_config
    finally:
        HydraConfig.instance().cfg = saved
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update(environ)


def run_main(script: str, *overrides: str, tmp_path: Path) -> int:
    """``python <script> <overrides>`` in this process (none of a subprocess's seconds of imports): the script's
    ``main`` body on the config Hydra would compose (:func:`hydra_job`). Returns the exit status: 0, or the code of
    the ``SystemExit`` it raised (2 after a one-line ``error: ...`` on stderr). Not run: Hydra's command-line parsing,
    logging setup and ``.hydra/`` files; the tests that run the script itself (``run_cli``) cover those."""
    main = importlib.import_module(Path(script).stem).main.__wrapped__  # the function under @hydra.main
    with hydra_job(Path(script).stem, *overrides, tmp_path=tmp_path) as config:
        try:
            main(config)
        except SystemExit as exit_:
            return exit_.code
    return 0


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A generated CelebA folder (original layout) of 160 images."""
    from faceattr.data.synthetic import generate_celeba

    return generate_celeba(tmp_path_factory.mktemp("data") / "celeba", num_images=160, seed=0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synthetic_root) -> Path:
    """The run dir of a 2-epoch tiny training run through the CLI, in this process (checkpoints, TensorBoard events,
    run.json)."""
    tmp = tmp_path_factory.mktemp("tiny_run")
    run_dir = tmp / "run"
    run_script(
        "train.py",
        *TINY,
        f"data.root={synthetic_root}",
        "trainer.max_epochs=2",
        f"hydra.run.dir={run_dir}",
        tmp_path=tmp,
    )
    return run_dir


@pytest.fixture(scope="session")
def shared_server(tiny_run, tmp_path_factory) -> Iterator[dict]:
    """One `bentoml serve` of the tiny run's model with small limits, shared by test_serve_api.py and
    test_serve_limits.py (``serve_process.serving``, ``serve_process.SHARED_LIMITS``)."""
    from serve_process import SHARED_LIMITS, serving

    with serving(tiny_run, tmp_path_factory.mktemp("serve"), SHARED_LIMITS) as server:
        yield server


@pytest.fixture(scope="session")
def portraits() -> dict:
    """Two real portraits in the public domain, as RGB Pillow images: skimage's astronaut (NASA, 512x512) and
    matplotlib's Grace Hopper (512x600)."""
    import matplotlib
    from PIL import Image

    skimage_data = pytest.importorskip("skimage.data")
    samples = Path(matplotlib.get_data_path()) / "sample_data"
    return {
        "astronaut": Image.fromarray(skimage_data.astronaut()),
        "hopper": Image.open(samples / "grace_hopper.jpg").convert("RGB"),
    }
