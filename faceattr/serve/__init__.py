"""Serving: the BentoML service (``service.py``) and what it is made of: its settings (``config.py``,
``conf/serve/``), the model runtime (``runtime.py``), in-process batching (``batching.py``), the upload guard
(``upload_guard.py``), refusals (``rejections.py``), metrics (``metrics.py``), the heap trim (``heap.py``), what
relies on BentoML's internals (``bentoml_workarounds.py``), and the image decoding/preprocessing shared with export
(``images.py``).

bentoml is imported by the service and the modules around it, not by ``images.py``, ``config.py`` or
``batching.py`` (``runtime.py`` only where it looks the model up); none of these import lightning or timm, so a
built Bento needs neither.
"""
