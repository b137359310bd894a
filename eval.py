"""Evaluate a checkpoint: `python eval.py ckpt=<.ckpt | run dir | sweep dir> [split=test|valid] [thresholds=...]`.

Prints the per-attribute table (positive rate, accuracy, balanced accuracy, AUROC, F1, threshold, ECE, Brier score)
sorted by accuracy, the ten worst groups (`groups=`, docs/fairness.md) and the mean figures papers report; writes
<run dir>/eval/<split>.json, <split>_per_attribute.csv, <split>_groups.csv and <split>_reliability.png (see
conf/eval.yaml). A mistake ends with one line `error: ...` and exit status 2 (a mistake on the command line:
before Hydra or anything slow runs).
"""

import hydra
from omegaconf import DictConfig

from faceattr.config.command_line import check_or_exit
from faceattr.config.schemas import register_schemas
from faceattr.errors import exit_on_user_error
from faceattr.quiet import quiet_libraries

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from faceattr.evaluation import evaluate

    quiet_libraries()
    summary = evaluate(cfg)
    print(summary["table"])
    if summary["worst_groups"]:
        print(f"\nthe ten worst groups (by {', '.join(summary['groups']['groups'])}):\n{summary['worst_groups']}")
    print(f"\nsplit:       {summary['split']} ({summary['num_images']} images of {summary['data_root']})")
    print(f"checkpoint:  {summary['checkpoint']}")
    print(f"thresholds:  {summary['thresholds']}")
    keys = ("acc", "bacc", "auroc", "f1", "ece", "brier", "loss")
    figures = ", ".join(f"{k}={summary[k]:.4f}" for k in keys if summary.get(k) is not None)
    print(f"mean:        {figures}")
    print(f"files:       {', '.join(summary['files'])}")
    if summary["tensorboard"]:
        print(f"tensorboard: eval/{summary['split']}/* in {summary['tensorboard']}")


if __name__ == "__main__":
    check_or_exit("eval")
    main()
