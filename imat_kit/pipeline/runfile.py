"""A YAML run file → :class:`~imat_kit.pipeline.spec.RunSpec`, every error located by line.

The file is read as YAML's node tree (which keeps each key's and value's line) and checked key
by key against the spec's fields: an unknown key, a value of the wrong kind, a config that is
not there, each is a :class:`~imat_kit.errors.KitError` naming the file, the line and the
value. Relative paths are taken from the file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imat_kit.errors import KitError
from imat_kit.pipeline.spec import ModelSpec, RunSpec, check_models, check_run, parse_gpus

RUN_FILE_SUFFIXES = (".yaml", ".yml")
#: larger than any run file (a few models' settings)
MAX_BYTES = 1 << 20

#: run-level keys → their kind; sections (prepare, ensemble, tune) have their own tables
TOP = {"data": "path", "out": "path", "folds": "folds", "seed": "int", "gpus": "gpus",
       "jobs": "int",
       "launcher": "str", "submission": "path", "figures": "bool", "models": "models",
       "prepare": "section", "ensemble": "section", "tune": "section"}
SECTIONS = {"prepare": {"folds": ("prepare_folds", "int"), "split": ("prepare_split", "str")},
            "ensemble": {"method": ("ensemble_method", "str"), "iou": ("ensemble_iou", "float"),
                         "scores": ("ensemble_scores", "str")},
            "tune": {"metric": ("tune_metric", "str?"), "rescore": ("tune_rescore", "bool"),
                     "min_support": ("tune_min_support", "int"), "fn": ("tune_fn", "str")}}
MODEL = {"config": "path", "name": "str", "cfg_options": "strs", "predict_options": "strs",
         "tta": "str?", "tta_scales": "floats", "soft_size": "int", "checkpoints": "int",
         "checkpoint": "str", "batch_size": "int", "weight": "float", "amp": "str?",
         "auto_scale_lr": "bool", "attribute_floor": "float"}


@dataclass
class _Node:
    """A YAML value with its line, and its children's lines by key."""

    value: object
    line: int
    keys: dict = field(default_factory=dict)  # key → (line of the key, _Node)
    items: list = field(default_factory=list)  # sequence: _Node per item


def _tree(node) -> _Node:
    import yaml

    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = _Node({}, line)
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise _Located("a key must be a plain word", k.start_mark.line + 1, k.value)
            if key in out.keys:
                raise _Located("a key is given twice", k.start_mark.line + 1, key)
            child = _tree(v)
            out.keys[key] = (k.start_mark.line + 1, child)
            out.value[key] = child.value
        return out
    if isinstance(node, yaml.SequenceNode):
        items = [_tree(v) for v in node.value]
        return _Node([i.value for i in items], line, items=items)
    return _Node(yaml.SafeLoader("").construct_object(node), line)


class _Located(Exception):
    def __init__(self, message: str, line: int, value: object) -> None:
        super().__init__(message)
        self.message, self.line, self.value = message, line, value


def _kind(value: object, kind: str, base: Path, line: int, key: str) -> object:
    """``value`` as ``kind`` (or an error at ``line``)."""
    def bad(what: str):
        return _Located(f"{key} must be {what}", line, value)

    if kind == "str?" and value is None:
        return None
    if kind in ("str", "str?"):
        if not isinstance(value, str) or not value:
            raise bad("a word")
        return value
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise bad("a path")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "strs":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of KEY=VALUE strings")
        bad_items = [v for v in value if "=" not in v]
        if bad_items:
            raise _Located(f"{key} takes KEY=VALUE strings", line, bad_items[0])
        return tuple(value)
    if kind == "floats":
        if not isinstance(value, list) or not value or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                for v in value):
            raise bad("a list of positive factors like [0.8, 1.0, 1.2]")
        return tuple(float(v) for v in value)
    if kind == "folds":
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not value or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise bad("a list of fold numbers like [0, 1, 2, 3, 4]")
        return tuple(value)
    raise AssertionError(kind)


def read_run_file(path: str | Path) -> RunSpec:
    """Read and check a run file (configs included); nothing is written."""
    import yaml

    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise KitError("run file not found", file=name)
    if path.stat().st_size > MAX_BYTES:
        raise KitError(f"a run file is a few lines; this one has more than {MAX_BYTES:,} bytes",
                       file=name, value=path.stat().st_size)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise KitError("a run file must be UTF-8 text", file=name) from None
    except RecursionError:  # PyYAML's parser recurses once per level of nesting
        raise KitError("values nested too deeply for a run file", file=name) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise KitError(f"not valid YAML: {getattr(e, 'problem', None) or e}",
                       file=name, row=mark.line + 1 if mark else None) from None
    try:
        if root is None:
            raise _Located("the run file is empty", 1, None)
        tree = _tree(root)
        spec, lines = _spec(tree, path.parent, name)
    except _Located as e:
        raise KitError(e.message, file=name, row=e.line, value=e.value) from None
    except RecursionError:
        raise KitError("values nested too deeply for a run file", file=name) from None
    check_run(spec, where=lambda key: (name, lines.get(key)))
    check_models(spec.models, where=lambda i, key: (name, lines.get((i, key),
                                                                     lines.get((i, None)))))
    return spec


def _spec(tree: _Node, base: Path, name: str) -> tuple[RunSpec, dict]:
    if not isinstance(tree.value, dict):
        raise _Located("a run file is a mapping of keys (data, out, folds, models, …)",
                       tree.line, None)
    lines: dict = {}
    kw: dict = {}
    for key, (line, node) in tree.keys.items():
        lines[key] = line
        if key not in TOP:
            raise _Located(f"unknown key (known: {', '.join(TOP)})", line, key)
        kind = TOP[key]
        if kind == "section":
            if not isinstance(node.value, dict):
                raise _Located(f"{key} must be a mapping", line, node.value)
            for sub, (sline, snode) in node.keys.items():
                if sub not in SECTIONS[key]:
                    raise _Located(f"unknown key in {key} (known: "
                                   f"{', '.join(SECTIONS[key])})", sline, sub)
                target, skind = SECTIONS[key][sub]
                kw[target] = _kind(snode.value, skind, base, sline, f"{key}.{sub}")
        elif kind == "models":
            kw["models"] = _models(node, base, lines)
        elif kind == "gpus":
            kw["gpus"] = (node.value, line)
        else:
            kw[key] = _kind(node.value, kind, base, line, key)
    for required in ("data", "out", "models"):
        if required not in kw:
            raise _Located(f"the run file needs {required!r}", tree.line, None)
    gpus = kw.pop("gpus", None)
    if gpus is not None:
        try:
            kw["gpus"], kw["launcher_gpus"] = parse_gpus(gpus[0], kw.get("launcher", "none"))
        except KitError as e:
            raise _Located(e.reason, gpus[1], gpus[0]) from None
    return RunSpec(**kw, source=Path(name)), lines


def _models(node: _Node, base: Path, lines: dict) -> tuple[ModelSpec, ...]:
    if not isinstance(node.value, list) or not node.value:
        raise _Located("models must be a list of {config: …} entries", node.line, node.value)
    out = []
    for i, item in enumerate(node.items):
        lines[(i, None)] = item.line
        if isinstance(item.value, str):  # a bare config path
            lines[(i, "config")] = item.line
            out.append(ModelSpec(config=_kind(item.value, "path", base, item.line, "config")))
            continue
        if not isinstance(item.value, dict):
            raise _Located("a model is a config path or a mapping with config:", item.line,
                           item.value)
        kw = {}
        for key, (line, child) in item.keys.items():
            lines[(i, key)] = line
            if key not in MODEL:
                raise _Located(f"unknown key in a model (known: {', '.join(MODEL)})", line, key)
            kw[key] = _kind(child.value, MODEL[key], base, line, key)
        if "config" not in kw:
            raise _Located("a model needs its config", item.line, None)
        out.append(ModelSpec(**kw))
    return tuple(out)
