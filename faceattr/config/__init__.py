"""One config mechanism for the entry scripts and the service: YAML composed onto typed dataclasses.

* train.py, eval.py, export.py and predict.py: ``conf/<name>.yaml`` starts its defaults list with ``<name>_schema``,
  the dataclass of :mod:`.train`, :mod:`.eval`, :mod:`.export` or :mod:`.predict` (stored in Hydra's ConfigStore by
  :func:`.schemas.register_schemas`), so Hydra composes onto it: values converted to each field's type, a mistyped
  key refused. The schemas hold types and checks only (every field ``MISSING``); every value, and what it means, is
  in the YAML: one place per default.
* :mod:`.check` checks a composed or resumed config against its schema, :mod:`.command_line` an entry's command line
  before ``@hydra.main`` runs; both end a mistake in one line (faceattr.errors.UserError, exit status 2).
* The service (faceattr/serve/config.py) reads ``conf/serve/`` the same way, onto its dataclass ``ServeConfig``
  (fields declared with faceattr.constraints.setting), with OmegaConf alone: a Bento carries neither Hydra nor this
  package. Its fields hold no values either: every default is in ``conf/serve/default.yaml``, which every settings
  file (and code running a served model: ``default_serve_config``) starts from.
"""
