"""Train a face-attribute classifier: `python train.py [group=option ...] [key=value ...]` (see conf/train.yaml).

`python train.py -m key=a,b ...` runs a sweep: a failing job is recorded as failed (its run.json and log) and the
others go on; when the sweep ends, summary.md/.csv/.png land in the sweep dir (see docs/sweeps.md). A failing single
run is recorded the same way, then ends with its one-line error (exit status 2) or traceback. A mistake on the
command line (an unknown key or option, a bad value) ends with one line `error: ...` and exit status 2 before Hydra
or anything slow runs, as in eval.py, export.py and predict.py (faceattr/config/command_line.py).
"""

import hydra
from omegaconf import DictConfig

from faceattr.config.command_line import check_or_exit
from faceattr.config.schemas import register_schemas
from faceattr.errors import exit_on_user_error
from faceattr.quiet import quiet_libraries
from faceattr.resolvers import register_resolvers
from faceattr.sweep.jobs import is_multirun, run_multirun_job, run_single_job
from faceattr.training import train

register_resolvers()  # before Hydra composes: the run and sweep dirs use ${coalesce:} and ${run_id:}
register_schemas()


def train_and_report(cfg: DictConfig) -> float | None:
    """One run, then its summary lines; the best monitored score goes back to Hydra's sweeper (Optuna)."""
    result = train(cfg)
    if result.rank_zero:
        score = "n/a" if result.best_score is None else f"{result.best_score:.4f}"
        print(f"\nrun dir:         {result.output_dir}")
        print(f"best checkpoint: {result.best_checkpoint or 'none saved'} ({result.monitor}={score})")
        if result.tensorboard:
            print(f"tensorboard:     tensorboard --logdir {result.output_dir}")
    return result.best_score


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet_libraries()
    if is_multirun():
        return run_multirun_job(train_and_report, cfg)
    # A single run: a user error (a full disk too) is one line `error: ...` and exit status 2.
    return exit_on_user_error(run_single_job)(train_and_report, cfg)


if __name__ == "__main__":
    check_or_exit("train")
    main()
