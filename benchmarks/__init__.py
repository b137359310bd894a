"""Benchmarks of faceattr (``python scripts/bench.py``), outside the product package: one module per family, shared
helpers in ``timing``.

``data`` (input pipeline vs the seed article's, ``seed_baseline``), ``training`` (Lightning vs a raw loop),
``inference`` (eager vs TorchScript vs ONNX Runtime), ``serving`` (``bentoml serve`` of the model ``served_model``
exports, under load), ``memory`` (peak RSS of a quickstart run); ``http_load`` is the HTTP load generator (also that
of ``scripts/load_test.py``), ``ratios`` defines the headline ratios, ``report`` renders BENCHMARKS.md, ``cli`` is
the command line.
"""
