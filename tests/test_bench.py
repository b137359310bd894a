"""The benchmark machinery (scripts/bench.py, benchmarks/) on tiny sizes: helpers, ratios, report, CLI output,
and the load generator it shares with scripts/load_test.py.

No timing is asserted: only that every figure lands in the JSON and that each ratio is computed from the figures
of the same run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import cli, ratios, report
from benchmarks.served_model import free_port
from benchmarks.serving import parse_batch_metrics
from benchmarks.timing import interleaved, latency_summary, median, percentile, ratio


def test_percentiles_medians_and_ratios():
    assert percentile([3, 1, 2, 4], 50) == 2.5 and percentile([5], 99) == 5
    assert percentile(list(range(101)), 99) == 99
    assert median([1, 9, 2]) == 2 and math.isnan(median([]))
    assert ratio(6, 3) == 2 and math.isnan(ratio(1, 0)) and math.isnan(ratio(None, 2))
    summary = latency_summary([0.010, 0.020, 0.030], images_per_call=32)
    assert summary["p50_ms"] == pytest.approx(20) and summary["img_s"] == pytest.approx(1600)


def test_interleaved_alternates_and_warms_up():
    calls = []
    result = interleaved(
        {"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, repetitions=4, warmup=1
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "b", "a", "a", "b"]  # warm-up, then A B, B A, ...
    assert result == {"a": [1.0] * 4, "b": [2.0] * 4}


def test_batch_metrics_are_summed_over_label_sets():
    text = "\n".join(
        [
            "# HELP faceattr_model_batch_size Images per model call",
            'faceattr_model_batch_size_bucket{le="1.0",worker="1"} 3.0',
            'faceattr_model_batch_size_sum{worker="1"} 40.0',
            'faceattr_model_batch_size_count{worker="1"} 5.0',
            'faceattr_model_batch_size_sum{worker="2"} 2.0',
            'faceattr_model_batch_size_count{worker="2"} 1.0',
        ]
    )
    assert parse_batch_metrics(text) == (42.0, 6.0)


def test_serving_levels_pool_their_repetitions():
    """A load level's figures: medians over repetitions, percentiles over every latency, errors summed; the
    /predict_batch level has the same figures less the request and error counts."""
    from benchmarks.serving import LevelSamples, batch_level_summary, cpu_bound_ratio_estimate

    samples = LevelSamples()
    for img_s, latencies, errors in (
        (100.0, [0.010, 0.030], {}),
        (300.0, [0.020], {"503": 1}),
        (200.0, [0.040], {"503": 2, "TimeoutError": 1}),
    ):
        samples.add(
            {
                "img_s": img_s,
                "latencies": latencies,
                "mean_batch": img_s / 100,
                "errors": errors,
                "cpu_ms_per_image": {"client": 1.0, "api": img_s / 100, "model": 3.0, "other": 9.0, "server": 14.0},
            }
        )
    level = samples.summary()
    assert level == {
        "img_s": 200.0,
        "p50_ms": 25.0,
        "p99_ms": pytest.approx(39.7),
        "mean_batch": 2.0,
        "requests_ok": 4,
        "errors": {"503": 3, "TimeoutError": 1},
        "reps": [100.0, 300.0, 200.0],
        "cpu_ms_per_image": {"client": 1.0, "api": 2.0, "model": 3.0, "server": 14.0},
    }
    peer = LevelSamples()  # a server whose CPU is not split by stage (the plain peer): client and server tree
    peer.add(
        {
            "img_s": 5.0,
            "latencies": [0.2],
            "mean_batch": 4.0,
            "errors": {},
            "cpu_ms_per_image": {"client": 1.0, "server": 6.0},
        }
    )
    assert peer.summary()["cpu_ms_per_image"] == {"client": 1.0, "server": 6.0}
    batch = batch_level_summary(samples)
    assert list(batch) == [
        "clients",
        "images_per_request",
        "img_s",
        "p50_ms",
        "p99_ms",
        "mean_batch",
        "reps",
        "cpu_ms_per_image",
    ]
    assert (batch["clients"], batch["images_per_request"], batch["img_s"]) == (4, 8, 200.0)
    result = {"c32": level, "inprocess_b32": {"cpu_ms_per_image": 3.0}}
    assert cpu_bound_ratio_estimate(result, 32) == 0.5  # 3 ms alone / (1 + 2 + 3) ms served (not the tree's 14)
    level["cpu_ms_per_image"]["api"] = math.nan
    assert cpu_bound_ratio_estimate(result, 32) is None


def fake_serving(c32_reps: list[float], peer_reps: dict[str, list[float]], best: str) -> dict:
    """A serving result with made-up figures: ours at c1 and c32 (img/s per repetition at c32), the in-process
    ceiling, and the plain peer at each worker count (its c32 repetitions)."""
    level = {
        "img_s": 0.0,
        "p50_ms": 10.0,
        "p99_ms": 20.0,
        "mean_batch": 1.0,
        "requests_ok": 10,
        "errors": {},
        "reps": [1.0],
        "cpu_ms_per_image": {"client": 1.0, "api": 2.0, "model": 3.0, "server": 5.5},
    }
    peer_level = dict(level, cpu_ms_per_image={"client": 1.0, "server": 9.0})
    fp32_cpu = {"client": 1.0, "api": 2.5, "model": 5.0, "server": 8.0}
    return {
        "backbone": "resnet10t",
        "format": "onnx",
        "max_batch_size": 32,
        "max_latency_ms": 1000,
        "num_threads": None,
        "api_workers": 1,
        "overrides": {},
        "image_bytes_mean": 9000,
        "c1": dict(level, img_s=20.0, reps=[20.0, 10.0]),
        "c32": dict(level, img_s=c32_reps[0], reps=c32_reps),
        "inprocess_b32": {"batch": 32, "img_s": 500.0, "p50_ms": 60.0, "cpu_ms_per_image": 2.0, "reps": [500.0, 250.0]},
        "artefact": "onnx_int8",
        "fp32": {  # the second server, on the fp32 artefact
            "c32": dict(level, img_s=c32_reps[0] / 2, reps=[r / 2 for r in c32_reps], cpu_ms_per_image=fp32_cpu),
            "inprocess_b32": {
                "batch": 32,
                "img_s": 200.0,
                "p50_ms": 160.0,
                "cpu_ms_per_image": 5.0,
                "reps": [250, 100],
            },
        },
        "cpu_bound_ratio_estimate": 0.33,
        "plain_bentoml": {
            "service": "benchmarks.plain_bentoml_service:PlainImageClassifier",
            "field": "images",
            "workers": {
                workers: {
                    "startup_s": 3.0,
                    "c1": dict(peer_level, img_s=9.0, reps=[9.0, 9.0]),
                    "c32": dict(peer_level, img_s=reps[0], reps=reps),
                }
                for workers, reps in peer_reps.items()
            },
            "best_workers": int(best),
        },
    }


def fake_sizing() -> dict:
    """A sizing result with made-up figures (one model, int8), its rule and resources worked out by the module."""
    from benchmarks import sizing

    entry = {
        "model": "quickstart",
        "backbone": "resnet10t",
        "image_size": "64x64",
        "precision": "int8",
        "img_s_c32": 150.0,
        "img_s_per_core": 100.0,
        "cores": 2,
        "c1_p50_ms": 10.0,
        "c1_p99_ms": 20.0,
        "c32_p50_ms": 50.0,
        "c32_p99_ms": 90.0,
        "rss_mb": {"worker": 200.0, "workers": 2, "serve": 100.0, "replica": 500.0},
    }
    return {
        "rows": {"quickstart/int8": entry},
        "replica_cores": sizing.REPLICA_CORES,
        "target_utilization": sizing.TARGET_UTILIZATION,
        "rule": {"quickstart/int8": [sizing.needed(entry, r) for r in (100, 1000)]},
        "manifest_row": "quickstart/int8",
        "decode_mb_per_worker": 1049.0,
        "kubernetes_resources": sizing.kubernetes_resources(entry, 1049.0),
    }


def test_the_sizing_rule_and_a_replicas_resources():
    """N = ceil(R / (0.7 x img/s per core)) cores, whole replicas of 2 cores, M = replicas x the replica's RSS;
    the manifest's memory: the RSS x 1.25 requested, and as the limit that + each worker's decoding budget, rounded
    up to 64 MiB; the budget is the default max_decode_pixels x 22 bytes."""
    from benchmarks import sizing

    entry = fake_sizing()["rows"]["quickstart/int8"]
    assert sizing.needed(entry, 100) == {"requests_per_s": 100, "cores": 2, "replicas": 1, "gib": 0.5}
    # 1000 / 70 = 14.3 -> 15 cores -> 8 replicas of 2 = 16 cores, 8 x 500 MB
    assert sizing.needed(entry, 1000) == {"requests_per_s": 1000, "cores": 16, "replicas": 8, "gib": 3.9}
    assert sizing.kubernetes_resources(entry, 1000.0) == {
        "requests": {"cpu": "2", "memory": "640Mi"},  # 625 MB -> 640
        "limits": {"cpu": "2", "memory": "2688Mi"},  # 625 + 2 x 1000 MB -> 2688
    }
    assert sizing.decode_budget_mb() == pytest.approx(50e6 * 22 / 2**20)


def fake_results() -> dict:
    """A complete result set with made-up figures, as the CLI writes it."""
    level = {
        "img_s": 0.0,
        "p50_ms": 10.0,
        "p99_ms": 20.0,
        "mean_batch": 1.0,
        "requests_ok": 10,
        "errors": {},
        "reps": [1.0],
        "cpu_ms_per_image": {"client": 1.0, "api": 2.0, "model": 3.0},
    }
    entry = {
        f"{r}_b{b}": {"img_s": v * b, "p50_ms": 1.0, "p99_ms": 2.0, "reps": [v * b, v * b]}
        for b in (1, 32)
        for r, v in (("eager", 100.0), ("torchscript", 120.0), ("onnx", 300.0))
    }
    slow = dict(entry, torchscript_b1={"img_s": 90.0, "p50_ms": 1.0, "p99_ms": 2.0, "reps": [80.0, 100.0]})
    return {
        "command": "python scripts/bench.py --quick",
        "mode": "quick",
        "machine": {"versions": {"torch": "x"}},
        "durations_s": {"total": 1.0},
        "data": {
            "images": 10,
            "image_size": [64, 64],
            "crop": [178, 178],
            "batch_size": 64,
            "images_per_repetition": 10,
            "equivalence": {"max_abs_diff_pixels": 1.0, "mean_abs_diff_pixels": 0.0},
            "per_worker": {
                "seed_img_s": 1000.0,
                "ours_img_s": 2500.0,
                "seed_reps": [1000.0, 500.0, 1000.0],
                "ours_reps": [2500.0, 2000.0, 3000.0],
            },
            "loader": {
                "num_workers": 2,
                "batches_per_repetition": 3,
                "seed_img_s": 1500.0,
                "ours_img_s": 4000.0,
                "seed_reps": [1500.0],
                "ours_reps": [4000.0],
            },
        },
        "training": {
            "backbone": "resnet10t",
            "batch_size": 64,
            "image_size": [64, 64],
            "optimizer": "torch.AdamW",
            "steps_timed": 3,
            "warmup_steps": 1,
            "log_every_n_steps": 10,
            "threads": 2,
            "raw_steps_s": 4.0,
            "lightning_steps_s": 3.9,
            "lightning_progress_bar_steps_s": math.nan,
            "raw_reps": [4.0, 2.0],
            "lightning_reps": [3.9, 1.95],
            "lightning_progress_bar_reps": [],
            "raw_img_s": 256.0,
            "lightning_img_s": 249.6,
        },
        "inference": {"threads": 2, "image_size": [64, 64], "models": {"tiny": entry, "big": slow}},
        "serving": dict(
            fake_serving([140.0, 70.0], {"1": [50.0, 35.0], "2": [70.0, 20.0]}, best="2"), c8=dict(level, img_s=80.0)
        ),
        "serving_large": fake_serving([50.0, 40.0], {"1": [40.0, 40.0], "2": [30.0, 30.0]}, best="1"),
        "sizing": fake_sizing(),
        "memory": {
            "command": "python train.py experiment=quickstart",
            "wall_s": 1.0,
            "global_step": 3,
            "peak_rss_main_mb": 1.0,
            "peak_rss_tree_mb": 2.0,
            "peak_pss_tree_mb": 1.5,
            "processes": 3,
        },
    }


def test_ratios_divide_figures_of_the_same_run():
    results = fake_results()
    values = ratios.compute(results)
    assert values["data_speedup_vs_seed"] == 3.0  # paired: median of 2.5, 4.0, 3.0 (not 2500 / 1000)
    assert values["lightning_vs_raw_loop"] == pytest.approx(0.975)
    assert values["torchscript_vs_eager_b1"] == 0.9  # the smallest over the backbones: median(0.8, 1.0)
    assert values["onnx_vs_eager_b1"] == 3.0
    assert values["serve_c32_vs_inprocess_b32"] == 0.28 and values["serve_c32_vs_c1"] == 7.0
    assert values["serve_vs_inprocess_resnet50_128"] == pytest.approx(0.13)  # median(50/500, 40/250)
    # ours / the peer at its best worker count (2 workers for the quickstart model, 1 for resnet50), paired
    assert values["served_vs_plain_bentoml_quickstart"] == pytest.approx(2.75)  # median(140/70, 70/20)
    assert values["served_vs_plain_bentoml_resnet50_128"] == pytest.approx(1.125)  # median(50/40, 40/40)
    # int8 / fp32 in process, paired: median(500/250, 250/100); served: ours (int8) / the fp32 server beside it
    assert values["int8_vs_fp32_onnx_b32_resnet50_128"] == pytest.approx(2.25)
    assert values["served_int8_vs_fp32_quickstart"] == pytest.approx(2.0)
    # the target's figure is the fp32 server's (API 2.5 ms / model 5 ms), the int8 one's beside it (2 ms / 3 ms)
    assert values["api_cpu_per_model_cpu_quickstart"] == pytest.approx(0.5)
    assert values["api_cpu_per_model_cpu_quickstart_int8"] == pytest.approx(2 / 3, abs=1e-4)
    assert values["loader_vs_train_step"] == pytest.approx(4000 / 256)  # two medians, not paired
    verdicts = ratios.verdicts(values)
    assert verdicts["data_speedup_vs_seed"] == "met" and verdicts["torchscript_vs_eager_b1"] == "MISSED"
    assert verdicts["onnx_vs_eager_b1"] == "report" and verdicts["serve_c32_vs_inprocess_b32"] == "report"
    assert (
        verdicts["served_vs_plain_bentoml_quickstart"] == "met"
        and verdicts["served_vs_plain_bentoml_resnet50_128"] == "MISSED"
    )
    # an upper bound: 0.5 meets "<= 0.5", 0.67 misses it
    assert (
        verdicts["api_cpu_per_model_cpu_quickstart"] == "met"
        and ratios.goal("api_cpu_per_model_cpu_quickstart") == "<= 0.5"
    )
    assert ratios.verdicts({"api_cpu_per_model_cpu_quickstart": 0.67})["api_cpu_per_model_cpu_quickstart"] == "MISSED"
    # a service that itself ran fp32 (--serve-env FACEATTR_SERVE_PRECISION=fp32): its own figures, no int8 extra
    for family in ("serving", "serving_large"):
        del results[family]["fp32"]
    values = ratios.compute(results)
    assert values["api_cpu_per_model_cpu_quickstart"] == pytest.approx(2 / 3, abs=1e-4)
    assert (
        values["api_cpu_per_model_cpu_quickstart_int8"] is None and values["int8_vs_fp32_onnx_b32_resnet50_128"] is None
    )
    assert ratios.goal("served_vs_plain_bentoml_quickstart") == ">= 2.0" and ratios.goal("onnx_vs_eager_b1") == "report"
    assert ratios.verdicts(ratios.compute({}))["serve_c32_vs_c1"] == "not measured"


def test_report_shows_every_family_and_ratio():
    results = fake_results()
    results["ratios"] = ratios.compute(results)
    results["verdicts"] = ratios.verdicts(results["ratios"])
    text = report.render(results)
    for name in ratios.RATIOS:
        assert f"`{name}`" in text
    for heading in ("## Input pipeline", "## Training loop", "## Inference (CPU)", "## Serving", "## Memory"):
        assert heading in text
    assert "python scripts/bench.py --quick" in text
    assert "| `api_cpu_per_model_cpu_quickstart` | 0.50 | <= 0.5 | met |" in text
    assert "| `int8_vs_fp32_onnx_b32_resnet50_128` | 2.25 | >= 1.8 | met |" in text
    assert (
        "| 32, fp32 artefact | 70 | 10.0 | 20.0 |" in text
        and "| in-process, batch 32 (ceiling), fp32 artefact |" in text
    )
    assert "| `served_vs_plain_bentoml_quickstart` | 2.75 | >= 2.0 | met |" in text
    # the peer's rows at each worker count, with ours / the peer paired per level: 140/50, 70/35 -> 2.4 (w1)
    assert text.count("**The plain BentoML peer**") == 2 and "Best worker count at concurrency 32: 2" in text
    assert "| 1 | 32 | 50 | 10.0 | 20.0 | 1.0 | 10 | 0 | 1.00 | 9.00 | 2.40 |" in text
    assert (
        "**API CPU / model CPU** (`api_cpu_per_model_cpu_quickstart`, target <= 0.5): 2.50 ms / 5.00 ms of CPU per "
        "image = 0.50 at concurrency 32, fp32 artefact. With the int8 artefact (the default on a CPU) the same API "
        "work, 2.00 ms, meets a cheaper model, 3.00 ms: 0.67." in text
    )
    # the sizing table, the rule and the manifest's resources
    assert "## Sizing a deployment" in text
    assert (
        "| quickstart (resnet10t at 64x64) | int8 | 100 | 150 | 10.0 / 20.0 | 50.0 / 90.0 | 200 | 100 | "
        "500 (2 workers) |" in text
    )
    assert "| quickstart/int8 | 2 cores (1 x 2), 0.5 GiB | 16 cores (8 x 2), 3.9 GiB |" in text
    assert '  requests: {cpu: "2", memory: 640Mi}\n  limits: {cpu: "2", memory: 2752Mi}' in text


class FolderModel:
    """A model of the BentoML store as a service sees it (``bentoml.models.BentoModel`` resolved): its folder."""

    def __init__(self, path):
        self.path = str(path)

    def path_of(self, item: str) -> str:
        return str(Path(self.path) / item)


def test_plain_peer_answers_like_the_exported_model_on_faceattrs_preprocessing(tiny_run, synthetic_root, monkeypatch):
    """The serving benchmark's plain BentoML service (benchmarks/plain_bentoml_service.py), in-process on the tiny
    run's export: for the same JPEGs it gives the exported model's probabilities on faceattr's own preprocessing
    (the two services do the same work; the peer resizes with torchvision, faceattr's image rule with Pillow, at most
    one level of 255 apart), and the attributes at or above the exported thresholds."""
    from PIL import Image
    from serve_process import exported_model

    from benchmarks import plain_bentoml_service as plain
    from faceattr.artefacts import load_torchscript
    from faceattr.contract import read_contract
    from faceattr.serve.images import load_and_preprocess

    folder = exported_model(tiny_run)
    monkeypatch.setattr(plain.PlainImageClassifier.inner, "bento_model", FolderModel(folder))
    service = plain.PlainImageClassifier()
    paths = sorted((synthetic_root / "img_align_celeba").glob("*.jpg"))[:3]
    answers = service.predict([Image.open(path) for path in paths])

    contract = read_contract(json.loads((folder / "faceattr.json").read_text()), str(folder))
    model, _ = load_torchscript(folder / "model.pt")
    inputs = [load_and_preprocess(p.read_bytes(), contract.image_size, contract.crop) for p in paths]
    pixels = torch.stack([torch.from_numpy(x) for x in inputs])
    with torch.inference_mode():
        expected = model(pixels.float() / 255)
    assert [list(answer["attributes"]) for answer in answers] == [list(contract.attributes)] * 3
    got = torch.tensor([list(answer["attributes"].values()) for answer in answers])
    assert torch.allclose(got, expected, atol=5e-3), (got - expected).abs().max()
    for answer, row in zip(answers, got.tolist()):
        present = [n for n, p, t in zip(contract.attributes, row, contract.thresholds) if p >= t]
        assert answer["present"] == present


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--only", "data,nope"])
    assert "unknown family nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_args(["--serve-env", "MAX_BATCH_SIZE=4"])


def tiny_run(tmp_path, monkeypatch, families: str) -> tuple[int, dict, str]:
    monkeypatch.setenv("FACEATTR_CACHE", str(tmp_path / "cache"))
    out, md = tmp_path / "out.json", tmp_path / "BENCHMARKS.md"
    code = cli.main(["--mode", "tiny", "--only", families, "--json", str(out), "--markdown", str(md)])
    results = json.loads(out.read_text())
    assert code == 0, results.get("errors")
    assert set(results["ratios"]) >= set(ratios.RATIOS) and results["families"] == families.split(",")
    for name, pairs in results["ratio_sources"].items():
        measured = [ratios.value(results, a, b) for a, b in pairs]
        measured = [m for m in measured if math.isfinite(m)]
        if measured:
            assert results["ratios"][name] == pytest.approx(min(measured), rel=1e-3, abs=5e-5), name  # 4 decimals
        else:
            assert results["ratios"][name] is None, name
    assert results["ratios"]["serve_c32_vs_c1"] is None and results["verdicts"]["serve_c32_vs_c1"] == "not measured"
    again = tmp_path / "again.md"
    assert cli.main(["--from-json", str(out), "--markdown", str(again)]) == 0
    assert again.read_text() == md.read_text()
    return code, results, md.read_text()


def test_tiny_run_of_training_and_inference(tmp_path, monkeypatch):
    _, results, text = tiny_run(tmp_path, monkeypatch, "training,inference")
    for name in ("lightning_vs_raw_loop", "torchscript_vs_eager_b1", "onnx_vs_eager_b1"):
        assert results["ratios"][name] > 0
    assert results["ratios"]["data_speedup_vs_seed"] is None
    assert "## Training loop" in text and "## Inference (CPU)" in text


def test_tiny_run_of_the_input_pipeline(tmp_path, monkeypatch):
    pytest.importorskip("pandas", reason="the seed-article baseline needs pandas: pip install -e .[bench]")
    _, results, text = tiny_run(tmp_path, monkeypatch, "data")
    assert results["ratios"]["data_speedup_vs_seed"] > 0
    # Both pipelines produce the same images, up to resampling and the reduced-scale JPEG decode (tiny mode's 32 px
    # are decoded at 1/4 scale: tests/test_jpeg_scaling.py states that tolerance).
    assert results["data"]["equivalence"]["mean_abs_diff_pixels"] < 4.0
    assert results["data"]["per_worker"]["ours_full_decode_img_s"] > 0
    assert "## Input pipeline" in text


def test_tiny_accelerator_run_on_the_cpu(tmp_path, monkeypatch, capsys, synthetic_root):
    """`--device cpu --mode tiny` runs the GPU measurement's code on the CPU: every figure is in the JSON and in the
    report's GPU section; `--device cuda` without a GPU stops with one line before measuring anything."""
    import torch

    from benchmarks import common

    monkeypatch.setenv("FACEATTR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(common, "prepare_data", lambda settings, cfg: synthetic_root)  # the session's generated data
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["--device", "cuda", "--json", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device cuda: no CUDA device") and "\n" not in err
    assert not (tmp_path / "none.json").exists()

    out, md = tmp_path / "out.json", tmp_path / "BENCHMARKS.md"
    assert cli.main(["--device", "cpu", "--mode", "tiny", "--json", str(out), "--markdown", str(md)]) == 0
    results = json.loads(out.read_text())
    assert results["families"] == ["accelerator"] and results["errors"] == {}
    assert "--device cpu" in results["command"]
    a = results["accelerator"]
    assert a["device"]["device"] == "cpu" and a["device"]["torch"] == torch.__version__ and a["errors"] == {}
    (train,) = a["training"]
    assert (train["backbone"], train["image_size"], train["precision"]) == ("test_resnet", 32, "bf16-mixed")
    assert train["lightning_img_s"] > 0 and train["raw_img_s"] > 0
    (loader,) = a["loader"]
    assert loader["jpeg_img_s"] > 0 and loader["cached_img_s"] > 0
    assert loader["jpeg_workers_per_10000"] == pytest.approx(10_000 / loader["jpeg_img_s"])
    serving = a["serving"]
    assert serving["device"] == "cpu" and serving["export"] == "export=onnx export.quantize=int8"
    assert serving["onnx_skipped"] is None
    rows = {(row["runtime"], row["precision"], row["device"]): row for row in serving["rows"]}
    assert set(rows) == {
        ("TorchScript", "fp32", "cpu"),
        ("ONNX Runtime", "fp32", "cpu"),
        ("ONNX Runtime", "int8", "cpu"),
    }
    assert [row["artefact"] for row in serving["rows"]] == ["torchscript", "onnx", "onnx_int8"]
    for row in serving["rows"]:
        assert set(row["batches"]) == {"1", "8"} and all(e["img_s"] > 0 for e in row["batches"].values())
    fp32, int8 = (rows["ONNX Runtime", p, "cpu"]["batches"]["8"]["img_s"] for p in ("fp32", "int8"))
    assert serving["int8_vs_fp32_onnx"] == pytest.approx(int8 / fp32, rel=1e-2)
    assert serving["preprocess"]["cpu_ms_per_image"] > 0 and serving["cores_to_feed"] > 0
    text = md.read_text()
    for heading in ("## GPU", "### Training", "### Loader workers per 10,000 img/s", "### Serving: TorchScript"):
        assert heading in text
    for runtime, precision, device in rows:
        assert f"| {runtime} | {precision} | {device} | 8 |" in text
    assert f"int8 / fp32 ONNX img/s at batch 8: **{serving['int8_vs_fp32_onnx']:.2f}x**" in text
    assert "published by NVIDIA" in text and "not measured | 224x224 | ~2,500 |" in text
    assert "## Headline ratios" not in text
    again = tmp_path / "again.md"
    assert cli.main(["--from-json", str(out), "--markdown", str(again)]) == 0
    assert again.read_text() == text


@pytest.fixture
def http_server():
    """A stdlib HTTP/1.1 server on a free loopback port: ``/ok`` (keep-alive, Content-Length), ``/chunked``,
    ``/close`` (closes after answering), ``/bad`` (400), ``/slow`` (answers after 2 s); every other path answers 200.
    Yields (host, port, received): the (field, filename, content type, data) of every multipart part it got."""
    import contextlib
    import threading
    import time
    from email.parser import BytesParser
    from email.policy import HTTP
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[str, str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            message = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
            )
            for part in message.iter_parts():
                received.append(
                    (
                        part.get_param("name", header="content-disposition"),
                        part.get_filename(),
                        part.get_content_type(),
                        part.get_payload(decode=True),
                    )
                )
            if self.path == "/bad":
                self._answer(400, b'{"error": "no"}')
            elif self.path == "/slow":
                time.sleep(2)
                with contextlib.suppress(ConnectionError):  # the client gave up and closed the connection
                    self._answer(200, b'{"ok": true}')
            elif self.path == "/chunked":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in (b'{"ok":', b" true}"):
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self._answer(200, b'{"ok": true}', close=self.path == "/close")

        def _answer(self, status, body, close=False):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address
    try:
        yield host, port, received
    finally:
        server.shutdown()
        server.server_close()


def test_lean_load_client_counts_answers_errors_and_multipart_bodies(http_server):
    """benchmarks.http_load against a stdlib HTTP/1.1 server: keep-alive Content-Length answers, chunked answers, a
    4xx, a closed connection, a request past its timeout; the server sees well-formed multipart uploads."""
    import asyncio

    from benchmarks.http_load import multipart_request, run_load

    host, port, received = http_server

    def load(path, total, files=None, timeout=30.0):
        files = files or [("image", "a.jpg", b"\xff\xd8 jpeg \r\n--bytes", "image/jpeg")]
        request = multipart_request(f"{host}:{port}", path, files)
        return asyncio.run(
            run_load(host, port, [request], concurrency=3, total=total, max_seconds=20, keep_bodies=2, timeout=timeout)
        )

    ok = load("/ok", 9)
    assert len(ok.latencies) == 9 and ok.errors == {} and ok.bodies == [b'{"ok": true}'] * 2
    assert ok.requests == ok.ok == 9 and ok.statuses == {200: 9}
    assert received[0] == ("image", "a.jpg", "image/jpeg", b"\xff\xd8 jpeg \r\n--bytes")
    chunked = load("/chunked", 4)
    assert len(chunked.latencies) == 4 and chunked.bodies[0] == b'{"ok": true}'
    closing = load("/close", 5)  # the server closes after each answer: the client reconnects
    assert len(closing.latencies) == 5 and closing.errors == {}
    bad = load("/bad", 4)
    assert bad.latencies == [] and bad.errors == {"400": 4} and bad.examples == {"400": '{"error": "no"}'}
    slow = load("/slow", 1, timeout=0.2)  # no answer within the request's timeout: counted, the run ends
    assert slow.latencies == [] and slow.errors == {"TimeoutError": 1}
    assert "TimeoutError" in slow.examples["TimeoutError"]
    received.clear()
    two = load("/ok", 1, [("images", f"{i}.jpg", bytes([i]) * 3, "image/jpeg") for i in range(2)])
    assert len(two.latencies) == 1
    assert [(name, data) for name, _, _, data in received] == [("images", b"\0\0\0"), ("images", b"\1\1\1")]
    refused = asyncio.run(run_load(host, free_port(), [b"GET / HTTP/1.1\r\n\r\n"], 1, 2, 5))
    assert refused.latencies == [] and sum(refused.errors.values()) == 2  # nobody listens: counted, not raised


def test_encoded_requests_cycle_through_the_images():
    """Request i carries images i*n, i*n+1, ... (wrapping); as many distinct requests as the cycle needs."""
    from email.parser import BytesParser
    from email.policy import HTTP

    from benchmarks.http_load import encoded_requests

    images = [(f"{i}.png", bytes([i])) for i in range(3)]

    def parts(request: bytes) -> list[tuple[str, str, str, bytes]]:
        head, body = request.split(b"\r\n\r\n", 1)
        content_type = next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Type"))
        message = BytesParser(policy=HTTP).parsebytes(content_type + b"\r\n\r\n" + body)
        return [
            (
                p.get_param("name", header="content-disposition"),
                p.get_filename(),
                p.get_content_type(),
                p.get_payload(decode=True),
            )
            for p in message.iter_parts()
        ]

    single = encoded_requests("h:1", "/predict", images)
    assert [parts(r) for r in single] == [[("image", f"{i}.png", "image/png", bytes([i]))] for i in range(3)]
    assert single[0].startswith(b"POST /predict HTTP/1.1\r\nHost: h:1\r\n")
    pairs = encoded_requests("h:1", "/predict_batch", images, per_request=2)  # 0 1 | 2 0 | 1 2
    assert [[name for _, name, _, _ in parts(r)] for r in pairs] == [
        ["0.png", "1.png"],
        ["2.png", "0.png"],
        ["1.png", "2.png"],
    ]
    assert {field for r in pairs for field, _, _, _ in parts(r)} == {"images"}
    other = encoded_requests("h:1", "/predict", images, field="images")  # another service's field (the plain peer)
    assert [parts(r)[0][0] for r in other] == ["images"] * 3


def test_load_test_uses_the_shared_client_and_percentiles(http_server, capsys):
    """scripts/load_test.py: its load runs on benchmarks.http_load and its report's percentiles are
    benchmarks.timing.percentile (the one definition BENCHMARKS.md uses)."""
    import importlib.util
    import sys

    from benchmarks import http_load

    path = Path(__file__).resolve().parents[1] / "scripts" / "load_test.py"
    spec = importlib.util.spec_from_file_location("faceattr_load_test", path)
    load_test = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = load_test
    spec.loader.exec_module(load_test)

    host, port, received = http_server
    images = [("a.jpg", b"a"), ("b.webp", b"b"), ("c.png", b"c")]
    result, wall = http_load.run(
        load_test.run_load(
            f"http://{host}:{port}", images, concurrency=2, seconds=20, route="/predict_batch", batch=2, max_requests=6
        )
    )
    assert isinstance(result, http_load.LoadResult) and result.ok == 6 and wall == result.elapsed
    assert {(name, filename, content_type) for name, filename, content_type, _ in received} == {
        ("images", "a.jpg", "image/jpeg"),
        ("images", "b.webp", "image/webp"),
        ("images", "c.png", "image/png"),
    }
    report = load_test.summarize(
        result,
        wall,
        None,
        None,
        None,
        {"url": f"http://{host}:{port}", "route": "/predict_batch", "concurrency": 2, "seconds": 20, "batch": 2},
    )
    assert report["requests"] == report["ok"] == 6 and report["errors"] == 0 and report["images_ok"] == 12
    ms = [v * 1000 for v in result.latencies]
    for q in (50, 90, 99):
        assert report["latency_ms"][f"p{q}"] == round(percentile(ms, q), 1)
    load_test.print_report(report)
    assert "requests 6  ok 6  errors 0" in capsys.readouterr().out
