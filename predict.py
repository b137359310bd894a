"""Predict a folder of photos: `python predict.py model=<tag | run dir | .ckpt> images=<folder | glob> out=preds.csv`.

Runs the exported model (the one `python export.py` stored) on every photo, preprocessed exactly as the service does
(`face=detect`: the face found and aligned as CelebA's were), and writes one CSV row per photo (per face with
`all_faces=true`) and `<out stem>.skipped.csv` (photos not answered, with the reason); see conf/predict/predict.yaml and
docs/serving.md. A mistake ends with one line `error: ...` and exit status 2 (a mistake on the command line: before
Hydra or anything slow runs).
"""

import hydra
from omegaconf import DictConfig

from faceattr.config.command_line import check_or_exit
from faceattr.config.schemas import register_schemas
from faceattr.errors import exit_on_user_error
from faceattr.quiet import quiet_libraries

register_schemas()


@hydra.main(version_base="1.3", config_path="conf/predict", config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from faceattr.prediction import predict_images, summary_lines

    quiet_libraries()
    print("\n".join(summary_lines(predict_images(cfg))))


if __name__ == "__main__":
    check_or_exit("predict")
    main()
