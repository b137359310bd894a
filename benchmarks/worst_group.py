"""The balancing table of docs/fairness.md: worst-group accuracy of Blond_Hair by Male, with and without
``data.balance_groups=[Blond_Hair,Male]``, over the same seeds, on generated data.

``python -m benchmarks.worst_group [--images 10000] [--limit 1500] [--seeds 0 1 2] [--epochs 3] [--out DIR]``

Why generated data: the generator (faceattr/data/synthetic/attribute_model.py) draws hair colour from sex as CelebA
has it (blond: 28% of women's identities, 5% of men's), so "blond man" is a small group (about 2% of the images)
and an ordinary (ERM) model can learn "blond means woman". Each run trains the tiny model on Blond_Hair alone
(``train.py`` in its own process, the command printed), then ``eval.py``'s evaluation with ``groups=[Male]`` reads its
worst-group accuracy on the test split (faceattr/fairness.py: the four groups Blond_Hair label x Male). The data set
is generated once into ``--out`` and reused. Prints the markdown table and writes ``worst_group.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

#: The two arms of the table: ERM (plain shuffling) and the group-balanced sampler.
ARMS = {"ERM": "data.balance_groups=null", "balanced": "data.balance_groups=[Blond_Hair,Male]"}
#: The tiny, fast settings every run shares (CPU, 32x32 inputs, the test backbone, Blond_Hair alone).
COMMON = (
    "model=tiny_resnet",
    "trainer=cpu",
    "data.image_size=32",
    "data.batch_size=64",
    "data.num_workers=0",
    "data.attributes=[Blond_Hair]",
    "callbacks.progress_bar=null",
    "callbacks.pictures=null",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worst_group", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10000, help="generated images (default 10000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument(
        "--limit", type=int, default=1500, help="training images drawn from the training split (data.limit; 0 = all)"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/worst_group"), help="data and runs go here")
    return parser.parse_args(argv)


def train(run_dir: Path, root: Path, arm: str, seed: int, epochs: int, limit: int) -> None:
    command = [
        sys.executable,
        "train.py",
        *COMMON,
        f"data.root={root}",
        ARMS[arm],
        f"seed={seed}",
        f"trainer.max_epochs={epochs}",
        f"data.limit={limit or 'null'}",
        f"hydra.run.dir={run_dir}",
    ]
    print("$", " ".join(command[1:]), flush=True)
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: training failed ({arm}, seed {seed}):\n{proc.stderr[-2000:]}")


def evaluate_groups(run_dir: Path) -> dict:
    """eval.py's evaluation of the run's best checkpoint with groups=[Male], in this process."""
    from hydra import compose, initialize_config_dir

    from faceattr.config.schemas import register_schemas
    from faceattr.evaluation import evaluate

    register_schemas()
    overrides = [f"ckpt={run_dir}", "groups=[Male]", "data.num_workers=0", "tensorboard=false"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        summary = evaluate(compose("eval", overrides=overrides))
    return summary["groups"]["worst"]["Blond_Hair"] | {"acc": summary["acc"]}


def group_sizes(root: Path) -> dict[str, dict[str, int]]:
    """Images per (Blond_Hair, Male) group in each split, counted from the annotation files."""
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    blond, male = names.index("Blond_Hair"), names.index("Male")
    labels = {row.split()[0]: row.split()[1:] for row in lines[2:]}
    sizes: dict[str, dict[str, int]] = {}
    for row in (root / "list_eval_partition.txt").read_text().splitlines():
        filename, part = row.split()
        split = ("train", "valid", "test")[int(part)]
        values = labels[filename]
        key = f"Blond_Hair={int(values[blond] == '1')},Male={int(values[male] == '1')}"
        sizes.setdefault(split, {}).setdefault(key, 0)
        sizes[split][key] += 1
    return {split: dict(sorted(groups.items())) for split, groups in sizes.items()}


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def table(results: dict[str, dict[int, dict]], seeds: list[int]) -> str:
    """The markdown table: per seed and arm, worst-group accuracy (which group, its n), average accuracy."""
    lines = [
        "| seed | ERM worst-group acc | balanced worst-group acc | ERM average acc | balanced average acc |",
        "|---|---|---|---|---|",
    ]
    for seed in seeds:
        erm, balanced = results["ERM"][seed], results["balanced"][seed]
        lines.append(
            f"| {seed} | {100 * erm['worst_group_acc']:.1f} ({erm['worst_group']}, n={erm['worst_group_n']}) "
            f"| {100 * balanced['worst_group_acc']:.1f} ({balanced['worst_group']}, n={balanced['worst_group_n']}) "
            f"| {100 * erm['avg_acc']:.1f} | {100 * balanced['avg_acc']:.1f} |"
        )
    columns = [[results[arm][s][key] for s in seeds] for key in ("worst_group_acc", "avg_acc") for arm in ARMS]
    lines.append("| mean ± std | " + " | ".join(_mean_std(values) for values in columns) + " |")
    return "\n".join(lines)


def group_table(results: dict[str, dict[int, dict]], seeds: list[int], test_sizes: dict[str, int]) -> str:
    """Each of the four test groups' accuracy, mean over the seeds, per arm."""
    lines = ["| test group | n | ERM acc | balanced acc |", "|---|---|---|---|"]
    for group, n in test_sizes.items():
        cells = [_mean_std([results[arm][s]["groups"][group] for s in seeds]) for arm in ARMS]
        lines.append(f"| {group} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from faceattr.data.synthetic import generate_celeba
    from faceattr.quiet import quiet_libraries

    quiet_libraries()  # eval runs in this process: the library notices eval.py itself silences
    started = time.perf_counter()
    out = args.out.expanduser().resolve()
    root = out / f"synthetic-n{args.images}"
    if not (root / "list_eval_partition.txt").is_file():
        print(f"generating {args.images} images into {root}", flush=True)
        generate_celeba(root, num_images=args.images, seed=0)
    results: dict[str, dict[int, dict]] = {arm: {} for arm in ARMS}
    for seed in args.seeds:
        for arm in ARMS:
            run_dir = out / f"{arm}-limit{args.limit}-epochs{args.epochs}-seed{seed}"
            train(run_dir, root, arm, seed, args.epochs, args.limit)
            results[arm][seed] = evaluate_groups(run_dir)
    sizes = group_sizes(root)
    report = {
        "images": args.images,
        "epochs": args.epochs,
        "limit": args.limit or None,
        "seeds": args.seeds,
        "group_sizes": sizes,
        "results": {arm: {str(s): r for s, r in runs.items()} for arm, runs in results.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "worst_group.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\ngroup sizes (Blond_Hair label x Male), per split (training draws --limit images of train at random):")
    for split, groups in sizes.items():
        print(f"  {split}: " + ", ".join(f"{g} {n}" for g, n in groups.items()))
    print("\n" + table(results, args.seeds))
    print("\n" + group_table(results, args.seeds, sizes["test"]))
    print(f"\n{report['seconds']:.0f} s; {out / 'worst_group.json'}")


if __name__ == "__main__":
    main()
