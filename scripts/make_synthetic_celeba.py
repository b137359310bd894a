"""Generate CelebA-format synthetic faces.

    python scripts/make_synthetic_celeba.py DIR --num-images N --seed S [--layout original|kaggle] [--workers W]

``original`` writes CelebA's Google Drive / torchvision layout into DIR, ``kaggle`` the Kaggle
(jessicali9530/celeba-dataset) layout. See faceattr/data/synthetic/ for the formats and the attribute model.
DIR appears complete or not at all; an earlier generated folder there is replaced, a folder of other files refused.
"""

from __future__ import annotations

import argparse
import time

from faceattr.data.synthetic import LAYOUTS, generate_synthetic
from faceattr.errors import exit_on_user_error


def _at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Generate synthetic CelebA-format data (images + annotation files).")
    parser.add_argument("dir", help="output folder: new, empty, or an earlier generated one (replaced)")
    parser.add_argument("--num-images", type=_at_least(1), required=True, help="number of images to generate")
    parser.add_argument("--seed", type=_at_least(0), default=0, help="generator seed (default 0)")
    parser.add_argument("--layout", choices=LAYOUTS, default="original", help="file layout (default original)")
    parser.add_argument(
        "--workers",
        type=_at_least(1),
        default=None,
        help="rendering processes (default: one per CPU); does not change the output",
    )
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    root = generate_synthetic(args.dir, args.num_images, args.seed, args.layout, args.workers)
    elapsed = time.perf_counter() - start
    print(
        f"wrote {args.num_images} synthetic images ({args.layout} layout, seed {args.seed}) to {root} "
        f"in {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()
