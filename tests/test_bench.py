"""The benchmark machinery (scripts/bench.py, faceattr/bench/) on tiny sizes: helpers, ratios, report, CLI output.

No timing is asserted: only that every figure lands in the JSON and that each ratio is computed from the figures
of the same run.
"""

from __future__ import annotations

import json
import math

import pytest

from faceattr.bench import cli, ratios, report
from faceattr.bench.serving import parse_batch_metrics
from faceattr.bench.timing import interleaved, latency_summary, median, percentile, ratio


def test_percentiles_medians_and_ratios():
    assert percentile([3, 1, 2, 4], 50) == 2.5 and percentile([5], 99) == 5
    assert percentile(list(range(101)), 99) == 99
    assert median([1, 9, 2]) == 2 and math.isnan(median([]))
    assert ratio(6, 3) == 2 and math.isnan(ratio(1, 0)) and math.isnan(ratio(None, 2))
    summary = latency_summary([0.010, 0.020, 0.030], images_per_call=32)
    assert summary["p50_ms"] == pytest.approx(20) and summary["img_s"] == pytest.approx(1600)


def test_interleaved_alternates_and_warms_up():
    calls = []
    result = interleaved({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0},
                         repetitions=4, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "b", "a", "a", "b"]  # warm-up, then A B, B A, ...
    assert result == {"a": [1.0] * 4, "b": [2.0] * 4}


def test_batch_metrics_are_summed_over_label_sets():
    text = "\n".join([
        "# HELP faceattr_model_batch_size Images per model call",
        'faceattr_model_batch_size_bucket{le="1.0",worker="1"} 3.0',
        'faceattr_model_batch_size_sum{worker="1"} 40.0',
        'faceattr_model_batch_size_count{worker="1"} 5.0',
        'faceattr_model_batch_size_sum{worker="2"} 2.0',
        'faceattr_model_batch_size_count{worker="2"} 1.0',
    ])
    assert parse_batch_metrics(text) == (42.0, 6.0)


def fake_results() -> dict:
    """A complete result set with made-up figures, as the CLI writes it."""
    level = {"img_s": 0.0, "p50_ms": 10.0, "p99_ms": 20.0, "mean_batch": 1.0, "requests_ok": 10, "errors": {},
             "reps": [1.0], "cpu_ms_per_image": {"client": 1.0, "api": 2.0, "model": 3.0}}
    entry = {f"{r}_b{b}": {"img_s": v * b, "p50_ms": 1.0, "p99_ms": 2.0, "reps": [v * b, v * b]} for b in (1, 32)
             for r, v in (("eager", 100.0), ("torchscript", 120.0), ("onnx", 300.0))}
    slow = dict(entry, torchscript_b1={"img_s": 90.0, "p50_ms": 1.0, "p99_ms": 2.0, "reps": [80.0, 100.0]})
    return {
        "command": "python scripts/bench.py --quick", "mode": "quick", "machine": {"versions": {"torch": "x"}},
        "durations_s": {"total": 1.0},
        "data": {"images": 10, "image_size": [64, 64], "crop": [178, 178], "batch_size": 64,
                 "images_per_repetition": 10, "equivalence": {"max_abs_diff_pixels": 1.0, "mean_abs_diff_pixels": 0.0},
                 "per_worker": {"seed_img_s": 1000.0, "ours_img_s": 2500.0, "seed_reps": [1000.0, 500.0, 1000.0],
                                "ours_reps": [2500.0, 2000.0, 3000.0]},
                 "loader": {"num_workers": 2, "batches_per_repetition": 3, "seed_img_s": 1500.0, "ours_img_s": 4000.0,
                            "seed_reps": [1500.0], "ours_reps": [4000.0]}},
        "training": {"backbone": "resnet10t", "batch_size": 64, "image_size": [64, 64], "optimizer": "torch.AdamW",
                     "steps_timed": 3, "warmup_steps": 1, "log_every_n_steps": 10, "threads": 2,
                     "raw_steps_s": 4.0, "lightning_steps_s": 3.9, "lightning_progress_bar_steps_s": math.nan,
                     "raw_reps": [4.0, 2.0], "lightning_reps": [3.9, 1.95], "lightning_progress_bar_reps": [],
                     "raw_img_s": 256.0, "lightning_img_s": 249.6},
        "inference": {"threads": 2, "image_size": [64, 64], "models": {"tiny": entry, "big": slow}},
        "serving": {"backbone": "resnet10t", "format": "torchscript", "max_batch_size": 32, "max_latency_ms": 1000,
                    "num_threads": None, "api_workers": 1, "overrides": {}, "image_bytes_mean": 9000,
                    "c1": dict(level, img_s=20.0, reps=[20.0, 10.0]), "c8": dict(level, img_s=80.0),
                    "c32": dict(level, img_s=140.0, reps=[140.0, 70.0]),
                    "inprocess_b32": {"batch": 32, "img_s": 500.0, "p50_ms": 60.0, "cpu_ms_per_image": 2.0,
                                      "reps": [500.0, 250.0]},
                    "cpu_bound_ratio_estimate": 0.33},
        "memory": {"command": "python train.py experiment=quickstart", "wall_s": 1.0, "global_step": 3,
                   "peak_rss_main_mb": 1.0, "peak_rss_tree_mb": 2.0, "peak_pss_tree_mb": 1.5, "processes": 3},
    }


def test_ratios_divide_figures_of_the_same_run():
    results = fake_results()
    values = ratios.compute(results)
    assert values["data_speedup_vs_seed"] == 3.0  # paired: median of 2.5, 4.0, 3.0 (not 2500 / 1000)
    assert values["lightning_vs_raw_loop"] == pytest.approx(0.975)
    assert values["torchscript_vs_eager_b1"] == 0.9  # the smallest over the backbones: median(0.8, 1.0)
    assert values["onnx_vs_eager_b1"] == 3.0
    assert values["serve_c32_vs_inprocess_b32"] == 0.28 and values["serve_c32_vs_c1"] == 7.0
    assert values["loader_vs_train_step"] == pytest.approx(4000 / 256)  # two medians, not paired
    verdicts = ratios.verdicts(values)
    assert verdicts["data_speedup_vs_seed"] == "met" and verdicts["torchscript_vs_eager_b1"] == "MISSED"
    assert verdicts["onnx_vs_eager_b1"] == "report"
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
            assert results["ratios"][name] == pytest.approx(min(measured), rel=1e-3), name
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
    assert results["data"]["equivalence"]["mean_abs_diff_pixels"] < 1.0  # both pipelines produce the same images
    assert "## Input pipeline" in text


def test_lean_load_client_counts_answers_errors_and_multipart_bodies():
    """faceattr.bench.http_load against a stdlib HTTP/1.1 server: keep-alive Content-Length answers, chunked
    answers, a 4xx and a closed connection; the server sees well-formed multipart uploads."""
    import asyncio
    import threading
    from email.parser import BytesParser
    from email.policy import HTTP
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from faceattr.bench.http_load import multipart_request, run_load

    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            message = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body)
            for part in message.iter_parts():
                received.append((part.get_param("name", header="content-disposition"), part.get_payload(decode=True)))
            if self.path == "/bad":
                self._answer(400, b'{"error": "no"}')
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
        def load(path, total, files=None):
            files = files or [("image", "a.jpg", b"\xff\xd8 jpeg \r\n--bytes", "image/jpeg")]
            request = multipart_request(f"{host}:{port}", path, files)
            return asyncio.run(run_load(host, port, [request], concurrency=3, total=total, max_seconds=20,
                                        keep_bodies=2))

        ok = load("/ok", 9)
        assert len(ok.latencies) == 9 and ok.errors == {} and ok.bodies == [b'{"ok": true}'] * 2
        assert received[0] == ("image", b"\xff\xd8 jpeg \r\n--bytes")
        chunked = load("/chunked", 4)
        assert len(chunked.latencies) == 4 and chunked.bodies[0] == b'{"ok": true}'
        closing = load("/close", 5)  # the server closes after each answer: the client reconnects
        assert len(closing.latencies) == 5 and closing.errors == {}
        bad = load("/bad", 4)
        assert bad.latencies == [] and bad.errors == {"400": 4}
        received.clear()
        two = load("/ok", 1, [("images", f"{i}.jpg", bytes([i]) * 3, "image/jpeg") for i in range(2)])
        assert len(two.latencies) == 1 and received == [("images", b"\0\0\0"), ("images", b"\1\1\1")]
    finally:
        server.shutdown()
        server.server_close()
    refused = asyncio.run(run_load(host, port, [b"GET / HTTP/1.1\r\n\r\n"], 1, 2, 5))
    assert refused.latencies == [] and sum(refused.errors.values()) == 2  # nobody listens: counted, not raised
