"""Evaluate a checkpoint: `python eval.py ckpt=<.ckpt | run dir | sweep dir> [split=test|valid] [thresholds=...]`.

Prints the per-attribute table (positive rate, accuracy, balanced accuracy, AUROC, F1, threshold) sorted by
accuracy and the mean figures papers report; writes <run dir>/eval/<split>.json and <split>_per_attribute.csv
(see conf/eval.yaml). A mistake ends with one line `error: ...` and exit status 2 (a mistake on the command line:
before Hydra or anything slow runs).
"""

import hydra
from omegaconf import DictConfig

from faceattr.config.command_line import check_or_exit
from faceattr.config.schemas import register_schemas
from faceattr.errors import exit_on_user_error

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from faceattr.evaluation import evaluate

    summary = evaluate(cfg)
    print(summary["table"])
    print(f"\nsplit:       {summary['split']} ({summary['num_images']} images of {summary['data_root']})")
    print(f"checkpoint:  {summary['checkpoint']}")
    print(f"thresholds:  {summary['thresholds']}")
    figures = ", ".join(
        f"{k}={summary[k]:.4f}" for k in ("acc", "bacc", "auroc", "f1", "loss") if summary.get(k) is not None
    )
    print(f"mean:        {figures}")
    print(f"files:       {', '.join(summary['files'])}")
    if summary["tensorboard"]:
        print(f"tensorboard: eval/{summary['split']}/* in {summary['tensorboard']}")


if __name__ == "__main__":
    check_or_exit("eval")
    main()
