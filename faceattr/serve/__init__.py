"""Serving: the BentoML service (``service.py``), its settings (``config.py``, ``conf/serve/``), the model runtime
(``runtime.py``) and the image decoding/preprocessing shared with export (``images.py``).

Only ``service.py`` (and ``runtime.resolve_model``) import bentoml; none of these import lightning or timm, so a
built Bento needs neither.
"""
