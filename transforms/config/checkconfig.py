"""``arkiv check-config``: every system YAML against the JSON Schema and against the loader.

The schema (``dags/systems/system.schema.json``) is what an editor checks while a system owner
types; :func:`transforms.config.systems.load_system` is what the DAG loader runs, with the checks a
schema cannot make (a table's key is one of its columns, a query is one read statement under
three SQL dialects, an organisationsnummer's check digit). A YAML is valid when both accept it.
Each finding names the file, the line and the key (the YAML's node marks locate it), and says
the rule — never a value from the file beyond a key's name.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transforms.common.errors import ConfigError
from transforms.common.masking import safe_line, safe_name
from transforms.config.settings import PROJECT_ROOT, Settings
from transforms.config.systems import load_system

SCHEMA_PATH = PROJECT_ROOT / "dags" / "systems" / "system.schema.json"
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_WHERE_TOKEN = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


@dataclass(frozen=True)
class Finding:
    file: str
    line: int | None
    key: str
    message: str
    level: str = "error"  # error | warning

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.key}:" if self.key else ""
        tag = " warning:" if self.level == "warning" else ""
        return safe_line(f"{where}:{tag}{key} {self.message}")


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def validator_for(schema: dict):
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def key_path(parts: list[str | int] | tuple) -> str:
    """The loader's spelling of a key: ``extract.tables.cases.key``, ``record_classes[0].name``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{safe_name(part)}" if out else safe_name(part))
    return out


def _as_json(value: Any) -> Any:
    """YAML's data as JSON Schema sees it: dates as ISO text, keys as text."""
    if isinstance(value, dict):
        return {str(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def node_at(root: yaml.Node, parts: list[str | int]) -> tuple[yaml.Node, yaml.Node | None, int]:
    """The node at ``parts`` (or its deepest existing ancestor), the key node naming it, and the depth reached."""
    node, key_node, depth = root, None, 0
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                         None)
            if match is None:
                break
            key_node, node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            key_node, node = None, node.value[part]
        else:
            break
        depth += 1
    return node, key_node, depth


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _describe(error) -> tuple[list[str | int], str]:
    """(key path, rule) for one schema error, in words that never quote the offending value."""
    parts = list(error.absolute_path)
    schema, kind, expected = error.schema, error.validator, error.validator_value
    if kind == "required":
        missing = next((k for k in expected if isinstance(error.instance, dict) and k not in error.instance), None)
        return ([*parts, missing] if missing else parts), "is required"
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            return [*parts, extra[0]], "is not a key of this mapping (a typo?)" + (
                f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
    if "propertyNames" in error.schema_path:  # a key's own name breaks the rule: name the key
        parts = [*parts, str(error.instance)]
        return parts, schema.get("patternErrorMessage", "is not a valid name")
    if kind == "pattern":
        return parts, schema.get("patternErrorMessage", "does not have the form this key needs")
    if kind in ("not", "oneOf", "anyOf", "if", "then", "else"):
        return parts, schema.get("errorMessage", "is not allowed here")
    if kind == "type":
        names = expected if isinstance(expected, list) else [expected]
        got = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a number",
               float: "a number", type(None): "nothing (null)"}.get(type(error.instance), "another kind of value")
        return parts, f"expected {' or '.join(names)}, got {got}"
    if kind == "enum":
        return parts, f"must be one of {', '.join(map(str, expected))}"
    if kind == "const":
        return parts, f"must be {json.dumps(expected)}"
    if kind in ("minimum", "exclusiveMinimum"):
        return parts, f"must be at least {expected}"
    if kind == "minItems":
        return parts, f"needs at least {expected} item(s)"
    if kind == "minProperties":
        return parts, f"needs at least {expected} entr{'y' if expected == 1 else 'ies'}"
    if kind in ("minLength", "maxLength"):
        return parts, f"must be {'at least' if kind == 'minLength' else 'at most'} {expected} character(s) long"
    if kind == "format":
        return parts, f"is not a valid {expected}"
    if kind == "maxProperties":
        return parts, schema.get("errorMessage", f"may have at most {expected} key(s)")
    return parts, f"breaks the schema's {kind} rule"


def _split_values(root: yaml.Node, parts: tuple = ()) -> list[tuple[tuple, yaml.Node]]:
    """Keys without a value in a flow mapping: what a comma in an unquoted value leaves behind."""
    out = []
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            if not isinstance(k, yaml.ScalarNode):
                continue
            here = (*parts, k.value)
            if root.flow_style and isinstance(v, yaml.ScalarNode) and v.tag.endswith(":null") and v.value == "":
                out.append((here, k))
            out += _split_values(v, here)
    elif isinstance(root, yaml.SequenceNode):
        for i, v in enumerate(root.value):
            out += _split_values(v, (*parts, i))
    return out


def _loader_finding(shown: str, path: Path, root: yaml.Node | None, exc: ConfigError) -> Finding:
    text = str(exc)
    prefix = f"{path.name}: "
    text = text[len(prefix):] if text.startswith(prefix) else text
    where, sep, rule = text.partition(": ")
    if not sep or " " in where.strip() or where == "(top)":
        return Finding(shown, None, "", text)
    parts: list[str | int] = [int(i) if i else name for i, name in _WHERE_TOKEN.findall(where)]
    node, key_node, _ = node_at(root, parts) if root is not None else (None, None, 0)
    return Finding(shown, _line(key_node or node), where, rule)


def check_file(path: Path, validator, shown: str | None = None) -> list[Finding]:
    """Every finding for one YAML: its syntax, the schema, then the loader."""
    shown = shown or str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return [Finding(shown, None, "", "not UTF-8 text")]
    try:
        root = yaml.compose(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
        data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return [Finding(shown, mark.line + 1 if mark else None, "",
                        f"not valid YAML: {getattr(exc, 'problem', None) or type(exc).__name__}")]
    if root is None:
        return [Finding(shown, None, "", "the file is empty")]
    findings: list[Finding] = []
    split = _split_values(root)
    split_keys = {tuple(parts) for parts, _ in split}
    for error in sorted(validator.iter_errors(_as_json(data)), key=lambda e: [str(p) for p in e.absolute_path]):
        if error.validator == "additionalProperties" and isinstance(error.instance, dict) and all(
                (*error.absolute_path, extra) in split_keys
                for extra in set(error.instance) - set(error.schema.get("properties", {}))):
            continue  # said below, with what to do about it
        parts, rule = _describe(error)
        node, key_node, depth = node_at(root, parts)
        # a missing key is reported where its mapping is; anything else at its own key
        findings.append(Finding(shown, _line(key_node if depth == len(parts) and key_node else node),
                                key_path(parts), rule))
    for parts, key_node in split:
        findings.append(Finding(shown, _line(key_node), key_path(parts),
                                "has no value: a comma in an unquoted value inside { } split it here, and the "
                                "rest of the value is lost; put the value in quotes"))
    try:
        load_system(path)
    except ConfigError as exc:
        found = _loader_finding(shown, path, root, exc)
        if not any(f.key == found.key and f.level == "error" for f in findings):
            findings.append(found)
    return sorted(findings, key=lambda f: f.line or 0)


def yaml_files(paths: list[str], default: Path) -> list[tuple[Path, str]]:
    """The YAMLs named (a folder means every ``*.yaml``/``*.yml`` in it); raises ValueError for a bad path."""
    out: list[tuple[Path, str]] = []
    for given in paths or [str(default)]:
        path = Path(given)
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                raise ValueError(f"{safe_name(given)}: no *.yaml file in this folder")
            out += [(p, str(p)) for p in found]
        elif path.is_file():
            out.append((path, given))
        else:
            raise ValueError(f"{safe_name(given)}: no such file or folder")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="system YAMLs or folders of them (default: the systems folder, ARKIV_SYSTEMS_DIR)")
    p.add_argument("--schema", type=Path, default=None,
                   help="the JSON Schema (default: system.schema.json in the systems folder)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """0 when every YAML is valid, 1 when any is not, 2 on a usage error (a path that is not there)."""
    import sys

    try:
        files = yaml_files(args.paths, settings.systems_dir)
        beside = settings.systems_dir / SCHEMA_PATH.name
        validator = validator_for(load_schema(args.schema or (beside if beside.is_file() else SCHEMA_PATH)))
    except (ValueError, OSError) as exc:
        print(f"arkiv check-config: {safe_line(exc)}", file=sys.stderr)
        return 2
    bad = 0
    for path, shown in files:
        findings = check_file(path, validator, shown)
        errors = [f for f in findings if f.level == "error"]
        bad += bool(errors)
        for f in findings:
            print(f)
        if not errors:
            print(safe_line(f"{shown}: valid"))
    print(f"{len(files)} file(s) checked, {bad} with errors")
    return 1 if bad else 0
