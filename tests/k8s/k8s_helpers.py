"""Helpers of the offline Kubernetes checks: the real helm binary, rendering, and validation
of objects against the Kubernetes schemas (kubernetes-validate) and of DistSyncCluster objects
against the CRD's own openAPIV3Schema (jsonschema) and its CEL rules (cel-python)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "distsync"
MANIFESTS = ROOT / "manifests"
K8S_VERSION = "1.31"  # kind's default node image line; schemas ship with kubernetes-validate
NO_SCHEMA_KINDS = {"DistSyncCluster", "ServiceMonitor"}  # CRD-defined: checked separately


@functools.cache
def tool(name: str) -> str:
    """helm / kubectl from scripts/get_k8s_tools.py (downloads once, then cached)."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "get_k8s_tools.py")],
                         check=True, capture_output=True, text=True)
    return str(Path(out.stdout.strip()) / name)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, check=check,
                          timeout=120)


def render(*args: str, release: str = "t", namespace: str = "ns") -> list[dict[str, Any]]:
    out = helm("template", release, str(CHART), "--namespace", namespace, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_validate(obj: dict[str, Any]) -> None:
    """Raise kubernetes_validate.ValidationError if `obj` breaks the Kubernetes schema
    (strict: unknown fields are errors too)."""
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@functools.cache
def crd() -> dict[str, Any]:
    (doc,) = [d for d in load_yaml(MANIFESTS / "crd.yaml")
              if d["kind"] == "CustomResourceDefinition"]
    return doc


def crd_schema(crd_obj: dict[str, Any] | None = None) -> dict[str, Any]:
    (version,) = (crd_obj or crd())["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


_cel = celpy.Environment()


def _cel_rules(schema: dict[str, Any], value: Any, old: Any, path: str) -> list[str]:
    errors = []
    for rule in schema.get("x-kubernetes-validations") or []:
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue  # transition rules apply to updates only
        act = {"self": celpy.json_to_cel(value)}
        if uses_old:
            act["oldSelf"] = celpy.json_to_cel(old)
        ok = _cel.program(_cel.compile(rule["rule"])).evaluate(act)
        if not ok:
            errors.append(f"{path or '<root>'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                errors += _cel_rules(sub, value[key],
                                     old.get(key) if isinstance(old, dict) else None,
                                     f"{path}.{key}" if path else key)
    return errors


def cr_errors(obj: dict[str, Any], old: dict[str, Any] | None = None,
              crd_obj: dict[str, Any] | None = None) -> list[str]:
    """What the API server would say about a DistSyncCluster: the CRD's structural schema
    (jsonschema) and its x-kubernetes-validations (CEL)."""
    schema = crd_schema(crd_obj)
    v = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in v.iter_errors(obj)]
    # CEL sees metadata.name like the API server does (the schema keeps metadata opaque).
    return errors + _cel_rules(schema, obj, old, "")


def structural_problems(schema: dict[str, Any], path: str = "") -> list[str]:
    """The rules of a structural schema the API server enforces on CRDs (the subset we use):
    every node has a type (or int-or-string / preserve-unknown-fields), no $ref, and no
    properties and additionalProperties together."""
    out = []
    if "$ref" in schema:
        out.append(f"{path}: $ref")
    if "type" not in schema and not (schema.get("x-kubernetes-int-or-string")
                                     or schema.get("x-kubernetes-preserve-unknown-fields")):
        out.append(f"{path}: no type")
    if "properties" in schema and "additionalProperties" in schema:
        out.append(f"{path}: properties with additionalProperties")
    for key, sub in (schema.get("properties") or {}).items():
        out += structural_problems(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        out += structural_problems(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += structural_problems(schema["additionalProperties"], f"{path}{{}}")
    return out
