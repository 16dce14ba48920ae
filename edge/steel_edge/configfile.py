"""YAML config files validated by pydantic, with errors that name the file, line and key path.

Shared by the trainer (``configs/train*.yaml``) and the daemon (``configs/edge.yaml``): one loader, one
error format, ``file:line: key.path: message``. CLI flags are applied as overrides on the parsed YAML
before validation, so a bad flag value is reported like a bad YAML value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config that does not validate; ``problems`` holds one ``file:line: key: message`` per error."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid config:\n  " + "\n  ".join(problems))
        self.problems = list(problems)


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path in a YAML document to its 1-based line, from the composed node tree."""
    index: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return index

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                index[child] = key.start_mark.line + 1
                walk(value, child)
                index[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, str(i)))

    if root is not None:
        walk(root, ())
    return index


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError([f"override {dotted}: {key} is not a section"])
        node = child
    node[leaf] = value


def _deep_update(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def parse_set_flags(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` flags as dotted-key overrides; values are read as YAML (``3``, ``true``, ``[1, 2]``)."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([f"command line: --set {item!r}: expected KEY=VALUE"])
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError([f"command line: --set {item!r}: value is not valid YAML ({exc})"]) from None
    return overrides


def load_config(
    model: type[M],
    path: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> M:
    """Read ``path`` (YAML; None means all defaults), apply dotted-key ``overrides``, validate as ``model``.

    ``base`` holds defaults that sit between the model's own and the file's (dotted keys, like
    ``overrides``). Overrides whose value is None are ignored, so unset CLI flags pass straight through.
    """
    text = ""
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: top level must be a mapping of keys, got {type(data).__name__}"])
    merged: dict[str, Any] = {}
    for key, value in (base or {}).items():
        _set_path(merged, key, value)
    _deep_update(merged, data)
    data = merged
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, key, value)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = _line_index(text)
        problems = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            dotted = ".".join(loc) or "<top>"
            # the deepest located ancestor: an unknown or missing key sits under a known section
            line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
            where = f"{source}:{line}" if line is not None and text else source
            if any(dotted == k or dotted.startswith(k + ".") for k, v in (overrides or {}).items() if v is not None):
                where = "command line"
            problems.append(f"{where}: {dotted}: {err['msg']}")
        raise ConfigError(problems) from None


def dump_config(config: BaseModel, path: Path | str) -> None:
    """Write a resolved config as YAML (what a run folder keeps beside its model)."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
