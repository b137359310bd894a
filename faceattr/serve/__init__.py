"""Serving: the BentoML service (``service.py``) and what it is made of: its settings (``config.py``,
``conf/serve/``), its documented fields and answers (``schemas.py``), where the model looks in a photo
(``face_finding.py``: the centre crop or the faces found, shared with ``predict.py``), the model runtime
(``runtime.py``), in-process batching (``batching.py``), the upload guard (``upload_guard.py``), refusals
(``rejections.py``), metrics (``metrics.py``), the heap trim (``heap.py``), what relies on BentoML's internals
(``bentoml_workarounds.py``), and the image decoding/preprocessing shared with export (``images.py``).

bentoml is imported by the service and the modules around it, not by ``images.py``, ``config.py``,
``face_finding.py`` or ``batching.py`` (``runtime.py`` only where it looks the model up); none of these import
lightning or timm, so a built Bento needs neither.
"""
