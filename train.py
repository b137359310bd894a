"""Train a face-attribute classifier: `python train.py [group=option ...] [key=value ...]` (see conf/train.yaml).

`python train.py -m key=a,b ...` runs a sweep: a failing job is recorded as failed (its run.json and log) and the
others go on; when the sweep ends, summary.md/.csv/.png land in the sweep dir (see docs/sweeps.md). A failing single
run is recorded the same way, then ends with its one-line error (exit status 2) or traceback.
"""

import hydra
from omegaconf import DictConfig

from faceattr.errors import exit_on_user_error
from faceattr.sweep.jobs import is_multirun, run_multirun_job, run_single_job
from faceattr.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if is_multirun():
        return run_multirun_job(train, cfg)
    # A single run: a user error (a full disk too) is one line `error: ...` and exit status 2.
    return exit_on_user_error(run_single_job)(train, cfg)


if __name__ == "__main__":
    main()
