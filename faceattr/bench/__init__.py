"""Benchmarks of faceattr (``python scripts/bench.py``): one module per family, shared helpers in ``timing``.

``data`` (input pipeline vs the seed article's, ``seed_baseline``), ``training`` (Lightning vs a raw loop),
``inference`` (eager vs TorchScript vs ONNX Runtime), ``serving`` (``bentoml serve`` under load), ``memory`` (peak
RSS of a quickstart run); ``ratios`` defines the headline ratios, ``report`` renders BENCHMARKS.md, ``cli`` is the
command line.
"""
