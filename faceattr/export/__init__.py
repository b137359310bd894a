"""Export: checkpoint -> TorchScript / ONNX with normalization and sigmoid inside -> parity check -> BentoML store.

``python export.py ckpt=...`` runs :func:`faceattr.export.pipeline.export`; see ``conf/export.yaml``.
"""
