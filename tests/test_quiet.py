"""A quiet first run (faceattr/quiet.py): the training entry, run as ``make quickstart`` runs it (made tiny), prints
our lines, Lightning's progress and its warnings about the user's config, and none of the library noise: Lightning's
litlogger advertisement, torch's LeafSpec deprecation inside Lightning, a FLOPs column of zeros."""

from __future__ import annotations

import builtins
import contextlib
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator

from conftest import TINY, run_script

from faceattr.quiet import quiet_libraries

# TINY with its line-per-epoch progress (what a log file or a captured run gets): "our lines".
QUICKSTART_TINY = ("experiment=quickstart", *(o for o in TINY if not o.startswith("callbacks.progress_bar")))
# Lowercase; the last: Lightning's note that conf/callbacks/default.yaml configures the model summary (our choice).
NOISE = ("litlogger", "deprecated", "flops", "already configured with model summary")


def interpreter_filters() -> list[tuple[str, str, str, str, int]]:
    """The warning filters a plain ``python train.py`` starts with (pytest's differ: it records warnings instead
    of printing them, and its config ignores some)."""
    code = (  # a filter's message and module: a compiled pattern, a plain string (the built-in ones) or None
        "import json, warnings; text = lambda p: getattr(p, 'pattern', p) or ''; print(json.dumps("
        "[(a, text(m), c.__name__, text(n), l) for a, m, c, n, l in warnings.filters]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [tuple(entry) for entry in json.loads(out)]


@contextlib.contextmanager
def warnings_as_the_cli_prints_them() -> Iterator[None]:
    """The interpreter's own filters, and each warning shown written to ``sys.stderr`` (the captured file
    descriptor 2 in :func:`run_script`), as in the script's own process; everything restored afterwards."""

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.resetwarnings()
        for action, message, category, module, lineno in interpreter_filters():
            warnings.filterwarnings(action, message, getattr(builtins, category), module, lineno, append=True)
        warnings.showwarning = show
        yield


def noise_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(word in line.lower() for word in NOISE)]


def test_the_quickstart_prints_no_library_noise_and_still_warns_about_the_config(tmp_path, synthetic_root):
    with warnings_as_the_cli_prints_them():
        proc = run_script(
            "train.py",
            *QUICKSTART_TINY,
            f"data.root={synthetic_root}",
            "data.synthetic.num_images=160",  # what the shared data holds (the quickstart generates 5000)
            "trainer.max_epochs=1",
            f"hydra.run.dir={tmp_path / 'run'}",
            tmp_path=tmp_path,
        )
    output = proc.stdout + proc.stderr
    assert noise_lines(output) == [], output
    # Ours and Lightning's: the model summary (without FLOPs), the epoch line, the test line, the run's summary.
    for line in ("Total params", "epoch 1/1: step", "test: ", "best checkpoint:"):
        assert line in output, output
    # A true warning about this config still shows, as Lightning words it: 8 batches an epoch, a line every 10.
    assert "The number of training batches (8) is smaller than the logging interval" in output, output


def test_the_noise_is_matched_by_its_text_and_module_only(tmp_path):
    """The same warning text from another module, and other lines of Lightning's logger, still come through."""
    import logging

    quiet_libraries()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(logger.name, logging.INFO, __file__, 1, message, None, None)

    assert logger.filter(record("GPU available: False, used: False"))
    assert not logger.filter(record("💡 Tip: For seamless cloud logging and experiment tracking, try ..."))
    text = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        quiet_libraries()
        warnings.warn_explicit(text, FutureWarning, "_pytree.py", 21, module="lightning.pytorch.utilities._pytree")
        warnings.warn_explicit(text, FutureWarning, "mine.py", 1, module="my_project.trees")
        warnings.warn_explicit("other", FutureWarning, "_pytree.py", 22, module="lightning.pytorch.utilities._pytree")
    assert [(str(w.message)[:10], w.filename) for w in shown] == [(text[:10], "mine.py"), ("other", "_pytree.py")]
