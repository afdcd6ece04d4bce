"""The JSON schemas kubeconform validates the rendered manifests against, made offline into a cache.

- Kubernetes' own kinds: the schemas the `kubernetes-validate` package ships (its `-local-strict`
  set, where every object refuses fields it does not define). They point at their shared
  definitions by an https address; the copies made here point at the file beside them instead,
  so kubeconform reads nothing from the network.
- The operators' kinds: the `openAPIV3Schema` of each CRD listed in crds.txt, taken from the
  operator's Go module at the pinned version, in kubeconform's layout
  (`crds/GROUP/KIND_VERSION.json`). As the API server does for a CRD with a structural
  schema, an object that lists its properties refuses others, unless the CRD says
  `x-kubernetes-preserve-unknown-fields`.
- RabbitmqCluster: the RabbitMQ Cluster Operator's module is not served by the Go module proxy,
  so its schema is the hand-written one in schemas/, with the Kubernetes definitions it uses.

The cache is made again only when one of its inputs changes (stamp file).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from importlib.metadata import version as package_version
from pathlib import Path

import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
PINS = HERE / "crds.txt"
HAND_WRITTEN = HERE / "schemas"
K8S_SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
K8S_DEFINITIONS_URL = "https://kubernetes.io/api/_definitions.json"


def locations(cache: Path) -> list[str]:
    """kubeconform's -schema-location templates for the cache."""
    return [
        str(cache / "kubernetes/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
                    "/{{ .ResourceKind }}{{ .KindSuffix }}.json"),
        str(cache / "crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"),
    ]


def pins() -> list[tuple[str, str, str, list[str]]]:
    """(module, version, hash, CRD files) per line of crds.txt."""
    out = []
    for line in PINS.read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            module, version, h1, *files = fields
            out.append((module, version, h1, files))
    return out


def ensure(cache: Path, go: str, k8s_versions: list[str]) -> None:
    """Make the cache unless it is already made from the same inputs."""
    stamp = hashlib.sha256()
    for f in [PINS, Path(__file__), *sorted(HAND_WRITTEN.glob("*.json"))]:
        stamp.update(f.read_bytes())
    stamp.update(f"{package_version('kubernetes-validate')} {k8s_versions}".encode())
    stamp_file = cache / "stamp"
    if stamp_file.exists() and stamp_file.read_text() == stamp.hexdigest():
        return
    shutil.rmtree(cache, ignore_errors=True)
    for v in k8s_versions:
        kubernetes_schemas(f"v{v}.0", cache / f"kubernetes/v{v}.0-standalone-strict")
    for module, version, h1, files in pins():
        directory = download(go, module, version, h1)
        for f in files:
            for crd in yaml.safe_load_all((directory / f).read_text()):
                if crd and crd.get("kind") == "CustomResourceDefinition":
                    crd_schemas(crd, cache / "crds")
    definitions = cache / f"kubernetes/v{k8s_versions[0]}.0-standalone-strict/_definitions.json"
    for f in sorted(HAND_WRITTEN.glob("*.json")):
        hand_written_schema(f, definitions, cache / "crds")
    stamp_file.write_text(stamp.hexdigest())


def kubernetes_schemas(version: str, out: Path) -> None:
    source = K8S_SCHEMAS / f"{version}-local-strict"
    out.mkdir(parents=True)
    for f in source.glob("*.json"):
        schema = json.loads(f.read_text())
        schema.pop("$id", None)
        text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
        (out / f.name).write_text(text)


def download(go: str, module: str, version: str, h1: str) -> Path:
    res = subprocess.run([go, "mod", "download", "-json", f"{module}@{version}"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=HERE)
    info = json.loads(res.stdout or "{}")
    if res.returncode != 0 or info.get("Error"):
        raise SystemExit(f"could not download {module}@{version}: {info.get('Error') or res.stderr.strip()}")
    if info.get("Sum") != h1:
        raise SystemExit(f"{module}@{version} has the hash {info.get('Sum')}, crds.txt pins {h1}")
    return Path(info["Dir"])


def crd_schemas(crd: dict, out: Path) -> None:
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for v in crd["spec"]["versions"]:
        schema = structural((v.get("schema") or {}).get("openAPIV3Schema") or {})
        path = out / group / f"{kind.lower()}_{v['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema, indent=1))


def structural(node: object) -> object:
    """A CRD's OpenAPI v3 schema as the JSON schema kubeconform checks: unknown fields refused
    where the CRD lists the fields (the API server prunes them; here they are an error),
    `nullable` allowing null, `x-kubernetes-int-or-string` either type."""
    if isinstance(node, list):
        return [structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: structural(v) for k, v in node.items()}
    if out.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        for name in ("apiVersion", "kind"):
            props.setdefault(name, {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def hand_written_schema(f: Path, definitions: Path, out: Path) -> None:
    schema = json.loads(f.read_text())
    schema.pop("$id", None)
    api_version = schema["properties"]["apiVersion"]["const"]
    kind = schema["properties"]["kind"]["const"]
    group, version = api_version.split("/")
    text = json.dumps(schema, indent=1).replace(f'"{K8S_DEFINITIONS_URL}#', f'"{definitions.as_uri()}#')
    path = out / group / f"{kind.lower()}_{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
