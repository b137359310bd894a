"""The README's config names are real: every key it names exists in the composed configs, every ``group=option`` it
shows is a file of ``conf/``, every ``FACEATTR_SERVE_<KEY>`` it (or docs/serving.md) names is a key of
``conf/serve/default.yaml``. A renamed or removed key would otherwise leave the docs telling users to type a setting
that Hydra refuses (or, for the service, that start-up refuses).

The extraction is a small set of helpers run on the README's text; each is also run on a sample with a misspelled
key, so that the check is shown to fail when a name is wrong.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from faceattr.config.schemas import register_schemas

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
README = (REPO / "README.md").read_text(encoding="utf-8")
SERVING = (REPO / "docs" / "serving.md").read_text(encoding="utf-8")

#: Each entry script: its config folder and config name.
ENTRIES = {
    "train": (CONF, "train"),
    "eval": (CONF, "eval"),
    "export": (CONF, "export"),
    "predict": (CONF / "predict", "predict"),
}
#: Top-level groups of the training config whose dotted keys the prose names (`data.limit=`, `callbacks.pictures`).
TRAIN_GROUPS = ("data", "model", "trainer", "callbacks", "monitor", "scheduler", "optimizer", "logger", "paths")
#: The serve variables that are not keys of the file: the one that picks the file.
SERVE_ENV_NOT_KEYS = {"CONFIG"}

FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
INLINE = re.compile(r"`([^`]+)`")
COMMAND = re.compile(r"\bpython (train|eval|export|predict)\.py\b(.*)")


def _inline_spans(text: str) -> list[str]:
    """The inline code spans outside fenced blocks, a span broken over lines joined with a space."""
    return [" ".join(span.split()) for span in INLINE.findall(FENCE.sub("", text))]


def _fenced_lines(text: str) -> list[str]:
    """The lines of the fenced blocks, continuation lines (trailing backslash) joined, comments removed."""
    lines = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(re.sub(r"\s+#.*", "", line))
    return lines


OVERRIDE = re.compile(r"^[+~]?[A-Za-z_][\w/.]*=")
#: Top-level keys of conf/train.yaml that prose overrides name without a `python train.py` in front.
TRAIN_TOP_KEYS = ("resume", "seed", "ckpt_path", "test")


def _training_overrides(span: str) -> list[str] | None:
    """An inline span made only of training overrides (`trainer=ddp trainer.devices=4`), else None."""
    words = span.split()
    if not words or not all(OVERRIDE.match(w) for w in words):
        return None
    heads = {re.split(r"[./=]", w.lstrip("+~"), maxsplit=1)[0] for w in words}
    if all(h in TRAIN_GROUPS or h in TRAIN_TOP_KEYS or (CONF / h).is_dir() for h in heads):
        return [w.lstrip("+~") for w in words]
    return None


def commands(text: str) -> list[tuple[str, list[str]]]:
    """Every ``python <entry>.py ...`` command in the text: (entry, its ``key=value`` overrides); an inline span of
    training overrides alone (`trainer=ddp trainer.num_nodes=2`) counts as a training command."""
    found = []
    for line in _fenced_lines(text) + _inline_spans(text):
        match = COMMAND.search(line)
        if not match:
            alone = _training_overrides(line)
            if alone:
                found.append(("train", alone))
            continue
        try:
            words = shlex.split(match.group(2))
        except ValueError:
            words = match.group(2).split()
        overrides = []
        for word in words:
            if word.startswith("[") and not word.startswith("[="):
                word = word[1:].rstrip("]")  # `[split=test|valid]`: an optional argument
            if OVERRIDE.match(word):
                overrides.append(word.lstrip("+~"))
        found.append((match.group(1), overrides))
    return found


def _values(value: str) -> list[str]:
    """The options a group override selects: `a,b,c` (a sweep), `[a,b]` (a list), `a|b` (alternatives)."""
    return [v for v in re.split(r"[,|]", value.strip("[]")) if v]


def prose_keys(text: str) -> set[str]:
    """Dotted training keys named in inline code outside commands: `data.limit=25000`, `callbacks.pictures`."""
    keys = set()
    for span in _inline_spans(text):
        if COMMAND.search(span) or _training_overrides(span):
            continue
        for part in re.split(r"[\s/]+", span):
            match = re.match(rf"^((?:{'|'.join(TRAIN_GROUPS)})(?:\.[a-z_][a-z0-9_]*)+)(=|$)", part)
            if match:
                keys.add(match.group(1))
    return keys


def serve_env_keys(text: str) -> set[str]:
    """The serve config keys that ``FACEATTR_SERVE_<KEY>`` names in the text (the key in lower case)."""
    return {name.lower() for name in re.findall(r"FACEATTR_SERVE_([A-Z][A-Z0-9_]*)", text)} - {
        k.lower() for k in SERVE_ENV_NOT_KEYS
    }


def table_options(text: str) -> list[tuple[str, str]]:
    """(group, option) for each option listed in the README's config map table (`| `data` | `celeba`, ... |`)."""
    pairs = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 4 or not re.fullmatch(r"`[a-z_]+`", cells[1]):
            continue
        group = cells[1].strip("`")
        if not (CONF / group).is_dir():
            continue
        listed = re.sub(r"\([^)]*\)", "", cells[2])  # `cosine` (linear warm-up): the words in brackets explain
        pairs += [(group, option) for option in re.findall(r"`([a-z0-9_]+)`", listed)]
    return pairs


def _has_key(tree: object, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def missing_names(entry: str, overrides: list[str]) -> list[str]:
    """The overrides of one command that name no config group option or no key of the entry's composed config."""
    config_dir, config_name = ENTRIES[entry]
    selections, keys, problems = [], [], []
    for override in overrides:
        key, value = override.split("=", 1)
        if "/" in key:  # a Hydra group such as hydra/launcher: its options may come from a plugin
            selections.append(f"{key}={_values(value)[0]}")
        elif "." not in key and (config_dir / key).is_dir():
            options = _values(value)
            problems += [f"{key}={o}" for o in options if not (config_dir / key / f"{o}.yaml").is_file()]
            selections.append(f"{key}={options[0]}" if not value.startswith("[") else f"{key}=[{','.join(options)}]")
        else:
            keys.append(key)
    if problems:
        return problems
    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name, overrides=selections, return_hydra_config=True)
    tree = OmegaConf.to_container(cfg, resolve=False)
    return [key for key in keys if not _has_key(tree, key)]


def missing_train_keys(keys: set[str]) -> list[str]:
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        tree = OmegaConf.to_container(compose("train"), resolve=False)
    return sorted(key for key in keys if not _has_key(tree, key))


def serve_keys() -> set[str]:
    return set(yaml.safe_load((CONF / "serve" / "default.yaml").read_text(encoding="utf-8")))


README_COMMANDS = commands(README)


def test_the_readme_shows_commands_of_every_entry():
    entries = {entry for entry, _ in README_COMMANDS}
    assert entries == set(ENTRIES)
    assert len(README_COMMANDS) >= 20
    train_keys = {o.split("=")[0] for e, overrides in README_COMMANDS if e == "train" for o in overrides}
    assert {"data.limit", "model.pretrained", "trainer.precision", "trainer.num_nodes", "resume"} <= train_keys


@pytest.mark.parametrize(("entry", "overrides"), README_COMMANDS, ids=[" ".join(o) or e for e, o in README_COMMANDS])
def test_every_override_of_a_readme_command_exists(entry, overrides):
    assert missing_names(entry, overrides) == []


def test_every_key_the_readme_prose_names_exists_in_the_training_config():
    keys = prose_keys(README)
    assert {"callbacks.pictures", "monitor.metric", "model.backbone"} <= keys
    assert missing_train_keys(keys) == []


def test_the_readme_top_level_keys_exist():
    sentence = re.search(r"Top-level keys in `conf/train.yaml`:(.*?)\.\s", README, re.S)
    assert sentence, "the README's list of top-level keys moved: update this test"
    keys = {k for span in INLINE.findall(sentence.group(1)) for k in span.split("/")}
    assert {"seed", "resume", "monitor.metric"} <= keys
    assert missing_train_keys(keys) == []


def test_every_option_of_the_config_map_is_a_file():
    pairs = table_options(README)
    assert len({group for group, _ in pairs}) >= 10
    assert [f"conf/{g}/{o}.yaml" for g, o in pairs if not (CONF / g / f"{o}.yaml").is_file()] == []


def test_every_serve_variable_the_docs_name_is_a_serve_key():
    named = serve_env_keys(README + SERVING)
    assert {"model", "api_workers", "decode_threads"} <= named
    assert sorted(named - serve_keys()) == []
    assert all((CONF / "serve" / f"{o}.yaml").is_file() for o in ("default", "gpu", "onnx"))


SAMPLE = """
```bash
python train.py model=resnet50 trainer.gpu=1     # a misspelled trainer key
python train.py -m model=resnet18,resnet5 seed=1,2   # a sweep naming an option that does not exist
python eval.py ckpt=run [split=test|valid] thresholds=calibrated
```
Knobs: `data.limt` (a subsample), `callbacks.pictures`, `FACEATTR_SERVE_MAX_BATCH=8`, `trainer=ddp trainer.num_node=2`.

| group | options | what |
| --- | --- | --- |
| `optimizer` | `adamw` (decoupled), `lion` | ... |
"""


def test_the_checks_find_misspelled_names_in_a_sample():
    found = commands(SAMPLE)
    assert [e for e, _ in found] == ["train", "train", "eval", "train"]
    assert missing_names(*found[0]) == ["trainer.gpu"]
    assert missing_names(*found[1]) == ["model=resnet5"]
    assert found[2][1] == ["ckpt=run", "split=test|valid", "thresholds=calibrated"]
    assert missing_names(*found[2]) == []
    assert missing_names(*found[3]) == ["trainer.num_node"]
    assert missing_names("train", ["trainer=ddp", "trainer.num_nodes=2"]) == []
    assert prose_keys(SAMPLE) == {"data.limt", "callbacks.pictures"}
    assert missing_train_keys(prose_keys(SAMPLE)) == ["data.limt"]
    assert serve_env_keys(SAMPLE) - serve_keys() == {"max_batch"}
    assert [o for g, o in table_options(SAMPLE) if not (CONF / g / f"{o}.yaml").is_file()] == ["lion"]
