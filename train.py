"""Train a face-attribute classifier: `python train.py [group=option ...] [key=value ...]` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from faceattr.errors import exit_on_user_error
from faceattr.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
