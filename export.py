"""Export a trained checkpoint: `python export.py ckpt=<.ckpt | run dir | sweep dir> [export=onnx] [key=value ...]`.

Writes TorchScript (and ONNX with export=onnx) to <run dir>/export/, checks parity against the Lightning model and
saves a new version of the BentoML model `name` (see conf/export.yaml and docs/serving.md).

A mistake on the command line (an unknown key, a bad value, an unknown `export=` option) ends with one line
`error: ...` and exit status 2, before Hydra or anything slow runs.
"""

import hydra
from omegaconf import DictConfig

from faceattr.config.command_line import check_or_exit
from faceattr.config.schemas import register_schemas
from faceattr.errors import exit_on_user_error
from faceattr.quiet import quiet_libraries

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from faceattr.export.pipeline import export, summary_lines

    quiet_libraries()
    metadata = export(cfg)
    print("\n".join(summary_lines(cfg, metadata)))


if __name__ == "__main__":
    check_or_exit("export")
    main()
