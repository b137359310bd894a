"""Settings of the benchmark modes, the quickstart configuration the benchmarks follow, and the data they read."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    """How much of everything to measure; ``quick``/``full`` are the CLI modes, ``tiny`` is for the smoke test."""

    mode: str
    repetitions: int  # timed repetitions per figure (after warm-up), interleaved baseline/candidate
    # Input pipeline.
    data_images: int | None  # generated images to read; None = the quickstart's data set (5,000)
    data_images_per_rep: int  # images through one worker per repetition
    loader_batches: int  # batches per repetition of the num_workers=2 loader
    loader_workers: int = 2
    # Training loop.
    train_warmup_steps: int = 3
    train_steps: int = 15
    train_repetitions: int = 4
    train_progress_bar: bool = False  # also time Lightning with its TQDM progress bar
    # Inference.
    inference_backbones: tuple[str, ...] = ("test_resnet", "resnet18")
    inference_calls_b1: int = 60
    inference_calls_b32: int = 6
    # Serving.
    serve_requests: dict[int, int] = field(default_factory=lambda: {1: 60, 8: 240, 32: 480})
    serve_max_seconds: float = 20.0  # per concurrency level and repetition
    serve_repetitions: int = 3
    serve_batch_level: bool = True  # also load /predict_batch (4 clients x 8 images): per-request overhead
    ceiling_calls_b32: int = 10
    # A second served model, the size of a production one (config overrides; () = none), and its load levels.
    serve_large: tuple[str, ...] = ("model=resnet50", "data.image_size=128")
    serve_large_requests: dict[int, int] = field(default_factory=lambda: {1: 20, 32: 160})
    # The plain BentoML peer (benchmarks/plain_bentoml_service.py), loaded beside ours at each of its worker counts.
    serve_plain_workers: tuple[int, ...] = (1, 2)
    # Sizing (benchmarks/sizing.py): (name, config overrides) of each model served at fp32 and int8, the requests
    # per level (concurrency: requests) and repetitions, and the request rates the rule is worked out for.
    sizing_models: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("quickstart", ()),
        ("resnet18_128", ("model=resnet18", "data.image_size=128")),
        ("resnet50_128", ("model=resnet50", "data.image_size=128")),
    )
    sizing_requests: dict[int, int] = field(default_factory=lambda: {1: 40, 32: 320})
    sizing_repetitions: int = 3
    sizing_rates: tuple[int, ...] = (100, 1000)
    # Memory: the quickstart training run (extra overrides shorten it in quick mode).
    memory_overrides: tuple[str, ...] = ()
    # Overrides of the quickstart config the benchmarks follow (tiny mode: a tiny model).
    config_overrides: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["serve_requests"] = {str(k): v for k, v in self.serve_requests.items()}
        data["serve_large_requests"] = {str(k): v for k, v in self.serve_large_requests.items()}
        data["sizing_requests"] = {str(k): v for k, v in self.sizing_requests.items()}
        return data


QUICK = Settings(
    mode="quick",
    repetitions=5,
    data_images=None,
    data_images_per_rep=320,
    loader_batches=12,
    train_warmup_steps=2,
    train_steps=6,
    train_repetitions=7,
    inference_calls_b1=60,
    inference_calls_b32=6,
    serve_requests={1: 60, 8: 240, 32: 480},
    serve_max_seconds=12.0,
    serve_repetitions=3,
    ceiling_calls_b32=8,
    sizing_requests={1: 20, 32: 160},
    sizing_repetitions=2,
    memory_overrides=(
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=25",
        "+trainer.limit_val_batches=5",
        "+trainer.limit_test_batches=5",
    ),
)
FULL = Settings(
    mode="full",
    repetitions=7,
    data_images=None,
    data_images_per_rep=768,
    loader_batches=24,
    train_warmup_steps=2,
    train_steps=8,
    train_repetitions=9,
    train_progress_bar=True,
    inference_backbones=("test_resnet", "resnet10t", "resnet18"),
    inference_calls_b1=150,
    inference_calls_b32=12,
    serve_requests={1: 150, 8: 600, 32: 1200},
    serve_max_seconds=25.0,
    serve_repetitions=5,
    ceiling_calls_b32=16,
    memory_overrides=("trainer.max_epochs=1",),
)
TINY = Settings(
    mode="tiny",
    repetitions=2,
    data_images=48,
    data_images_per_rep=32,
    loader_batches=2,
    train_warmup_steps=1,
    train_steps=2,
    train_repetitions=1,
    inference_backbones=("test_resnet",),
    inference_calls_b1=3,
    inference_calls_b32=2,
    serve_requests={1: 4, 8: 8, 32: 32},
    serve_max_seconds=5.0,
    serve_repetitions=1,
    serve_batch_level=False,
    ceiling_calls_b32=2,
    serve_large=(),
    serve_plain_workers=(1,),
    sizing_models=(("tiny", ()),),
    sizing_requests={1: 4, 32: 32},
    sizing_repetitions=1,
    memory_overrides=(
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
    ),
    config_overrides=("model=tiny_resnet", "data.image_size=32", "data.batch_size=16"),
)
MODES = {"quick": QUICK, "full": FULL, "tiny": TINY}


def quickstart_config(*overrides: str):
    """``conf/train.yaml`` composed with ``experiment=quickstart`` (what ``make quickstart`` trains)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from faceattr.config.schemas import register_schemas

    register_schemas()  # conf/train.yaml composes onto train_schema
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["experiment=quickstart", *overrides])


def cache_dir() -> Path:
    return Path(os.environ.get("FACEATTR_CACHE", "~/.cache/faceattr")).expanduser()


def bench_data(num_images: int, seed: int = 0) -> Path:
    """A generated CelebA folder (178x218 JPEGs, original layout) of ``num_images``, made once and cached."""
    from faceattr.data.synthetic import ensure_synthetic

    return ensure_synthetic(cache_dir() / f"bench-celeba-n{num_images}-s{seed}", num_images=num_images, seed=seed)


def size_pair(size) -> tuple[int, int]:
    from faceattr.preprocess import size_pair as pair

    return pair(size if isinstance(size, int) else list(size))


def prepare_data(settings: Settings, cfg) -> Path:
    """The generated CelebA folder the benchmarks read: the quickstart's own (``data=synthetic``, 5,000 images,
    cached under FACEATTR_CACHE) unless ``settings.data_images`` asks for a smaller one."""
    from faceattr.data.synthetic import ensure_synthetic

    if settings.data_images is None:
        return ensure_synthetic(Path(str(cfg.data.root)).expanduser(), **dict(cfg.data.synthetic))
    return bench_data(settings.data_images)


def serving_images(root: Path, count: int = 64) -> list[Path]:
    """Real encoded images for the serving load: the first ``count`` JPEGs of the generated folder."""
    return sorted((root / "img_align_celeba").glob("*.jpg"))[:count]


def memory_overrides(settings: Settings, root: Path) -> tuple[str, ...]:
    """Extra overrides of the quickstart run: its data set stays the quickstart's, except in tiny mode."""
    if settings.mode != "tiny":
        return ()
    return (f"data.root={root}", "data.synthetic=null", "model=tiny_resnet", "data.image_size=32", "data.num_workers=0")
