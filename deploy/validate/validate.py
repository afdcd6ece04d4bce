#!/usr/bin/env python3
"""Static checks of the deployment files: docker-compose.yml, deploy/Dockerfile, deploy/k8s.

Nothing here needs a Docker engine, a cluster or the network. scripts/validate-deploy.sh
installs the tools first (kustomize and deploy-check from tools/deploy-check, the Python
packages from requirements.txt) and then runs this file with their paths.

Each check prints PASS, FAIL or SKIP with its reasons; the closing line counts them and the
exit status is non-zero when any check failed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# Kubernetes versions the manifests are checked against: the oldest one supported and the
# newest schemas kubernetes-validate ships.
K8S_VERSIONS = ["1.30", "1.37"]

# The services: their image targets, environment prefixes and HTTP ports.
SERVICES = {
    "auth-service": {"prefix": "AUTH", "port": 8081},
    "history-service": {"prefix": "HISTORY", "port": 8082},
    "chat-gateway": {"prefix": "GATEWAY", "port": 8080},
}
# Autoscaled tiers (issue: gateway and history-service scale out).
AUTOSCALED = {"chat-gateway", "history-service"}
# The only service that may see the token signing key.
SIGNING_KEY_VAR = "AUTH__JWT__PRIVATE_KEY_PEM"
# ENV names in the Dockerfile that look secret to BuildKit's check but are not.
DOCKERFILE_ALLOWED_ENV = ["AUTH__HTTP__HOST", "AUTH__HTTP__PORT"]

OVERLAYS = {
    # overlay directory: files with the Secrets it expects to exist beforehand
    "deploy/k8s/base": ["deploy/k8s/base/secret.template.yaml"],
    "deploy/k8s/overlays/example": ["deploy/k8s/base/secret.template.yaml"],
    "deploy/k8s/overlays/external-services": [
        "deploy/k8s/base/secret.template.yaml",
        "deploy/k8s/overlays/external-services/secrets.template.yaml",
    ],
}


class Report:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self.warnings: list[str] = []

    def record(self, name: str, problems: list[str]) -> bool:
        if problems:
            self.failed.append(name)
            print(f"FAIL  {name}")
            for p in problems:
                print(f"        - {p}")
            return False
        self.passed.append(name)
        print(f"PASS  {name}")
        return True

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append(name)
        print(f"SKIP  {name}: {reason}")

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"WARN  {message}")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def load_yaml_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


# ---------------------------------------------------------------------------------------------
# docker compose


def compose_load(deploy_check: str, env_file: Path | None) -> tuple[dict | None, str]:
    cmd = [deploy_check, "compose", str(ROOT / "docker-compose.yml")]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    res = run(cmd)
    if res.returncode != 0:
        return None, (res.stderr or res.stdout).strip()
    return json.loads(res.stdout), ""


def depends_on_names(svc: dict) -> dict[str, str | None]:
    dep = svc.get("depends_on") or {}
    if isinstance(dep, list):
        return {name: None for name in dep}
    return {name: (spec or {}).get("condition") for name, spec in dep.items()}


def env_map(svc: dict) -> dict[str, str | None]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            key, sep, value = item.partition("=")
            out[key] = value if sep else None
        return out
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def dockerfile_stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> [(INSTRUCTION, arguments)], continuation lines joined."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instr, _, args = logical.partition(" ")
        instr = instr.upper()
        logical = ""
        if instr == "FROM":
            m = re.search(r"\bAS\s+(\S+)\s*$", args, re.IGNORECASE)
            name = m.group(1) if m else f"stage-{len(stages)}"
            base = args.split()[0]
            current = stages.setdefault(name, [])
            current.append(("FROM", base))
        elif current is not None:
            current.append((instr, args.strip()))
    return stages


def check_compose(report: Report, deploy_check: str) -> None:
    compose_path = ROOT / "docker-compose.yml"
    example = ROOT / ".env.example"

    project, err = compose_load(deploy_check, None)
    report.record(
        "compose: docker-compose.yml loads with compose-go (schema, interpolation, references), "
        "no .env as on a fresh clone",
        [err] if project is None else [],
    )
    with_example, err = compose_load(deploy_check, example)
    report.record(
        "compose: loads with .env.example copied to .env", [err] if with_example is None else []
    )

    name = "compose: a key from `openssl genpkey -algorithm ed25519` appended to .env as documented reaches auth-service intact, and only auth-service"
    openssl = shutil.which("openssl")
    if openssl is None:
        report.skip(name, "openssl is not installed")
    else:
        problems: list[str] = []
        key = run([openssl, "genpkey", "-algorithm", "ed25519"])
        if key.returncode != 0:
            problems.append(f"openssl genpkey failed: {key.stderr.strip()}")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                env_file = Path(tmp) / ".env"
                pem = key.stdout.strip()
                env_file.write_text(example.read_text() + f'{SIGNING_KEY_VAR}="{pem}"\n')
                loaded, err = compose_load(deploy_check, env_file)
                if loaded is None:
                    problems.append(err)
                else:
                    for svc_name, svc in loaded["services"].items():
                        got = (svc.get("environment") or {}).get(SIGNING_KEY_VAR)
                        if svc_name == "auth-service":
                            if (got or "").strip() != pem:
                                problems.append(f"auth-service gets {SIGNING_KEY_VAR}={got!r}, not the PEM")
                        elif got is not None:
                            problems.append(f"{svc_name} also receives {SIGNING_KEY_VAR}")
        report.record(name, problems)

    raw = yaml.safe_load(compose_path.read_text())
    services: dict = raw.get("services") or {}
    declared_volumes = set((raw.get("volumes") or {}).keys())

    problems = []
    for svc_name, svc in services.items():
        for dep in depends_on_names(svc):
            if dep not in services:
                problems.append(f"{svc_name}: depends_on names undefined service {dep!r}")
        for link in svc.get("links") or []:
            target = link.split(":")[0]
            if target not in services:
                problems.append(f"{svc_name}: links to undefined service {target!r}")
        for vol in svc.get("volumes") or []:
            source = vol.get("source") if isinstance(vol, dict) else vol.split(":")[0]
            kind = vol.get("type", "volume") if isinstance(vol, dict) else None
            is_named = (kind == "volume") if kind else not source.startswith((".", "/", "~", "$"))
            if is_named and source and source not in declared_volumes:
                problems.append(f"{svc_name}: volume {source!r} is not declared under top-level volumes")
        env_files = svc.get("env_file") or []
        if isinstance(env_files, (str, dict)):
            env_files = [env_files]
        for ef in env_files:
            path, required = (ef, True) if isinstance(ef, str) else (ef["path"], ef.get("required", True))
            if required and not (ROOT / path).exists():
                problems.append(f"{svc_name}: env_file {path!r} does not exist (mark it `required: false` or commit it)")
    for vol in declared_volumes:
        if not any(
            (v.get("source") if isinstance(v, dict) else v.split(":")[0]) == vol
            for s in services.values()
            for v in (s.get("volumes") or [])
        ):
            problems.append(f"volume {vol!r} is declared but no service uses it")
    report.record("compose: depends_on/links name defined services, named volumes are declared, env_files exist", problems)

    problems = []
    for svc_name, svc in services.items():
        for dep, condition in depends_on_names(svc).items():
            if condition == "service_healthy" and "healthcheck" not in (services.get(dep) or {}):
                problems.append(f"{svc_name} waits for {dep} to be healthy, but {dep} has no healthcheck here")
        hc = svc.get("healthcheck")
        env = env_map(svc)
        port_var = next((k for k in env if k.endswith("__HTTP__PORT")), None)
        if hc and port_var:
            test = " ".join(hc["test"]) if isinstance(hc["test"], list) else hc["test"]
            m = re.search(r"http://[^:/]+:(\d+)(/\S*)", test)
            if not m:
                problems.append(f"{svc_name}: healthcheck does not call an HTTP URL: {test}")
            else:
                if m.group(1) != str(env[port_var]):
                    problems.append(f"{svc_name}: healthcheck port {m.group(1)} but {port_var}={env[port_var]}")
                if m.group(2) not in ("/health/ready", "/health/live"):
                    problems.append(f"{svc_name}: healthcheck path {m.group(2)} is not a health endpoint")
    report.record("compose: every service waited on as healthy has a healthcheck, on its own HTTP port", problems)

    problems = []
    text = compose_path.read_text()
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    for svc in services.values():
        used |= {k for k, v in env_map(svc).items() if v is None}
    example_text = example.read_text()
    for var in sorted(used):
        if not re.search(rf"^#?\s*{re.escape(var)}=", example_text, re.MULTILINE):
            problems.append(f"{var} is used by docker-compose.yml but not described in .env.example")
    for line in example_text.splitlines():
        if not line.startswith("#") and ("PRIVATE KEY" in line or re.fullmatch(r"[A-Za-z0-9+/=]{40,}", line)):
            problems.append(".env.example contains key material")
            break
    for m in re.finditer(r"^([A-Z_]*PASSWORD[A-Z_]*)=(.+)$", example_text, re.MULTILINE):
        problems.append(f".env.example sets {m.group(1)}; leave passwords empty there")
    report.record("compose: every variable it reads is described in .env.example, which holds no secret", problems)

    problems = []
    instance_ids: dict[str, str] = {}
    host_ports: dict[str, str] = {}
    stages = dockerfile_stages(ROOT / "deploy/Dockerfile")
    for svc_name, svc in services.items():
        env = env_map(svc)
        iid = env.get("GATEWAY__AMQP__INSTANCE_ID")
        if any(k.startswith("GATEWAY__") for k in env):
            if not iid:
                problems.append(f"{svc_name}: gateway without GATEWAY__AMQP__INSTANCE_ID")
            elif iid in instance_ids:
                problems.append(f"{svc_name}: GATEWAY__AMQP__INSTANCE_ID {iid!r} also used by {instance_ids[iid]}")
            else:
                instance_ids[iid] = svc_name
        for port in svc.get("ports") or []:
            published = str(port).rsplit(":", 1)[0].split(":")[-1] if isinstance(port, str) else str(port.get("published"))
            if published in host_ports:
                problems.append(f"{svc_name}: host port {published} also published by {host_ports[published]}")
            host_ports[published] = svc_name
        build = svc.get("build")
        if build:
            dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            if not dockerfile.exists():
                problems.append(f"{svc_name}: {dockerfile} does not exist")
            elif build.get("target") not in stages:
                problems.append(f"{svc_name}: build target {build.get('target')!r} is not a stage of {dockerfile.name}")
    if len(instance_ids) < 2:
        problems.append("fewer than two gateway instances: fan-out between gateways is not shown")
    report.record("compose: gateway instance ids and host ports are unique, build targets exist in deploy/Dockerfile", problems)

    warn_unknown_settings(report, "docker-compose.yml", {
        n: env_map(s) for n, s in services.items()
        if (s.get("build") or {}).get("target") in SERVICES
    }, by_target={n: (s.get("build") or {}).get("target") for n, s in services.items()})


# ---------------------------------------------------------------------------------------------
# Dockerfile


def check_dockerfile(report: Report, deploy_check: str) -> None:
    path = ROOT / "deploy/Dockerfile"
    cmd = [deploy_check, "dockerfile", str(path)]
    for name in DOCKERFILE_ALLOWED_ENV:
        cmd += ["--allow-env", name]
    res = run(cmd)
    out = [l for l in (res.stdout + res.stderr).splitlines() if l.strip()]
    report.record(
        "Dockerfile: BuildKit's checks (the rules of `docker build --check`), every stage",
        out if res.returncode != 0 else [],
    )

    stages = dockerfile_stages(path)
    problems: list[str] = []

    def chain(name: str) -> list[tuple[str, str]]:
        instrs = stages[name]
        base = instrs[0][1]
        return (chain(base) if base in stages else []) + instrs

    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    for service, info in SERVICES.items():
        if service not in stages:
            problems.append(f"no build target {service!r}")
            continue
        own = stages[service]
        full = chain(service)
        kinds = [i for i, _ in own]
        users = [a for i, a in full if i == "USER"]
        if not users or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]):
            problems.append(f"{service}: does not run as a numeric non-root USER")
        if "ENTRYPOINT" not in kinds and "CMD" not in kinds:
            problems.append(f"{service}: no ENTRYPOINT/CMD")
        hc = [a for i, a in own if i == "HEALTHCHECK"]
        if not hc or "/health/live" not in hc[0]:
            problems.append(f"{service}: HEALTHCHECK missing or not on /health/live")
        expose = [a for i, a in own if i == "EXPOSE"]
        if expose != [str(info["port"])]:
            problems.append(f"{service}: EXPOSE {expose} but the service listens on {info['port']}")
        env_line = " ".join(a for i, a in own if i == "ENV")
        if f"{info['prefix']}__HTTP__PORT={info['port']}" not in env_line:
            problems.append(f"{service}: ENV does not set {info['prefix']}__HTTP__PORT={info['port']}")
        if f"{info['prefix']}__HTTP__HOST=0.0.0.0" not in env_line:
            problems.append(f"{service}: ENV does not make it listen on 0.0.0.0")
        if service not in members:
            problems.append(f"{service}: not a member of the Cargo workspace")
    if "chat-gateway" in stages and not any(
        i == "COPY" and "--from=web" in a and "/app/web" in a for i, a in stages["chat-gateway"]
    ):
        problems.append("chat-gateway: the built web client is not copied to /app/web")
    builder = " ".join(a for _, a in stages.get("builder", []))
    if "cargo build --release --locked" not in builder:
        problems.append("builder stage does not run `cargo build --release --locked`")
    web = " ".join(a for _, a in stages.get("web", []))
    if "npm ci" not in web or "npm run build" not in web:
        problems.append("web stage does not run `npm ci` and `npm run build`")
    for needed in ["Cargo.lock", "web/package-lock.json"]:
        if not (ROOT / needed).exists():
            problems.append(f"{needed} is missing: the build uses --locked / npm ci")
    report.record("Dockerfile: one target per service with non-root USER, HEALTHCHECK, EXPOSE and listen address", problems)

    problems = []
    ignore = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    for must in [".git", "target", "**/node_modules", ".env", ".local"]:
        if must not in ignore:
            problems.append(f".dockerignore does not exclude {must}")
    for keep in ["Cargo.lock", "Cargo.toml", "web/package-lock.json", "web"]:
        if keep in ignore:
            problems.append(f".dockerignore excludes {keep}, which the build needs")
    report.record(".dockerignore: keeps VCS data, build output, dependencies and .env out of the build context", problems)


# ---------------------------------------------------------------------------------------------
# Kubernetes


class Schemas:
    """Kubernetes' own schemas from kubernetes-validate, plus ours for the operators' kinds."""

    def __init__(self) -> None:
        self.crd: dict[tuple[str, str], dict] = {}
        for f in sorted(SCHEMAS.glob("*.json")):
            schema = json.loads(f.read_text())
            api_version = schema["properties"]["apiVersion"]["const"]
            kind = schema["properties"]["kind"]["const"]
            self.crd[(api_version, kind)] = schema
        version = K8S_VERSIONS[0]
        defs = kv_utils.schema_contents(
            f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json", version
        )
        registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
        for schema in self.crd.values():
            registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
        self.registry = registry

    def validate(self, doc: dict) -> list[str]:
        key = (doc.get("apiVersion"), doc.get("kind"))
        where = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        if key in self.crd:
            validator = jsonschema.Draft202012Validator(self.crd[key], registry=self.registry)
            return [
                f"{where}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in validator.iter_errors(doc)
            ]
        problems = []
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(map(str, e.path))
                problems.append(f"{where} (Kubernetes {version}): {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{where}: no schema for {key[0]} {key[1]} (add one to deploy/validate/schemas)")
        return problems


def labels_match(selector: dict | None, labels: dict) -> bool:
    """A Service selector (plain map) or a LabelSelector with matchLabels; an empty one matches all."""
    if not selector:
        return True
    if "matchExpressions" in selector:
        raise ValueError("matchExpressions selectors are not used in these manifests; extend labels_match")
    match = selector.get("matchLabels", selector) if "matchLabels" in selector else selector
    return all(labels.get(k) == v for k, v in match.items())


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def name_of(doc: dict) -> str:
    return doc["metadata"]["name"]


def operator_pods_and_secrets(docs: list[dict]) -> tuple[list[dict], dict[str, set[str]]]:
    """Pod labels and Secrets the operators create for the custom resources in the render."""
    pods: list[dict] = []
    secrets: dict[str, set[str]] = {}
    for rmq in by_kind(docs, "RabbitmqCluster"):
        n = name_of(rmq)
        pods.append({"labels": {"app.kubernetes.io/name": n, "app.kubernetes.io/component": "rabbitmq",
                                "app.kubernetes.io/part-of": "rabbitmq"}, "ports": {5672, 15672, 15692, 25672, 4369}})
        secrets[f"{n}-default-user"] = {"username", "password", "host", "port", "provider", "type",
                                        "default_user.conf", "connection_string"}
    for mdb in by_kind(docs, "MongoDBCommunity"):
        n = name_of(mdb)
        pods.append({"labels": {"app": f"{n}-svc"}, "ports": {27017}})
        for user in mdb["spec"].get("users", []):
            secret = user.get("connectionStringSecretName") or f"{n}-{user.get('db', 'admin')}-{user['name']}"
            secrets[secret] = {"connectionString.standard", "connectionString.standardSrv", "username", "password"}
    return pods, secrets


def check_references(docs: list[dict], template_secrets: dict[str, set[str]], overlay: str) -> list[str]:
    problems: list[str] = []
    deployments = by_kind(docs, "Deployment")
    configmaps = {name_of(c): set((c.get("data") or {}).keys()) for c in by_kind(docs, "ConfigMap")}
    op_pods, op_secrets = operator_pods_and_secrets(docs)
    secrets = {name_of(s): set((s.get("stringData") or {}).keys()) | set((s.get("data") or {}).keys())
               for s in by_kind(docs, "Secret")}
    secrets.update(op_secrets)
    secrets.update(template_secrets)
    pods = [{"name": name_of(d), "labels": d["spec"]["template"]["metadata"]["labels"],
             "ports": {p["containerPort"] for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])},
             "port_names": {p.get("name"): p["containerPort"] for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}}
            for d in deployments]

    for d in deployments:
        n = name_of(d)
        if not labels_match(d["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]):
            problems.append(f"Deployment/{n}: selector does not match its pod labels")
        for c in d["spec"]["template"]["spec"]["containers"]:
            defined: set[str] = set()
            for ef in c.get("envFrom", []):
                ref = (ef.get("configMapRef") or {}).get("name")
                if ref is not None:
                    if ref not in configmaps:
                        problems.append(f"Deployment/{n}: envFrom ConfigMap {ref!r} is not in the render")
                    defined |= configmaps.get(ref, set())
                sref = (ef.get("secretRef") or {}).get("name")
                if sref is not None:
                    if sref not in secrets:
                        problems.append(f"Deployment/{n}: envFrom Secret {sref!r} is neither rendered, templated nor operator-made")
                    defined |= secrets.get(sref, set())
            for e in c.get("env", []):
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value", "")):
                    if var not in defined:
                        problems.append(f"Deployment/{n}: {e['name']} uses $({var}) before it is defined")
                vf = e.get("valueFrom") or {}
                if "secretKeyRef" in vf:
                    ref = vf["secretKeyRef"]
                    if ref["name"] not in secrets:
                        problems.append(f"Deployment/{n}: {e['name']} reads Secret {ref['name']!r}, which is neither rendered, templated nor operator-made")
                    elif ref["key"] not in secrets[ref["name"]]:
                        problems.append(f"Deployment/{n}: {e['name']} reads key {ref['key']!r} missing from Secret {ref['name']!r}")
                if "configMapKeyRef" in vf:
                    ref = vf["configMapKeyRef"]
                    if ref["key"] not in configmaps.get(ref["name"], set()):
                        problems.append(f"Deployment/{n}: {e['name']} reads missing ConfigMap key {ref['name']}/{ref['key']}")
                defined.add(e["name"])
            ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if port is not None and port not in ports:
                    problems.append(f"Deployment/{n}: {probe} port {port!r} is not a container port")

    services = {}
    for s in by_kind(docs, "Service"):
        n = name_of(s)
        targets = [p for p in pods if labels_match(s["spec"].get("selector"), p["labels"])]
        if not targets:
            problems.append(f"Service/{n}: selector matches no pod template")
        for port in s["spec"]["ports"]:
            tp = port.get("targetPort", port["port"])
            for p in targets:
                if tp not in p["ports"] and tp not in p["port_names"]:
                    problems.append(f"Service/{n}: targetPort {tp!r} is not a port of {p['name']}")
        services[n] = {p.get("name") for p in s["spec"]["ports"]} | {p["port"] for p in s["spec"]["ports"]}

    for ing in by_kind(docs, "Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in rule["http"]["paths"]:
                svc = path["backend"]["service"]
                port = svc["port"].get("name", svc["port"].get("number"))
                if svc["name"] not in services:
                    problems.append(f"Ingress/{name_of(ing)}: backend Service {svc['name']!r} is not in the render")
                elif port not in services[svc["name"]]:
                    problems.append(f"Ingress/{name_of(ing)}: Service {svc['name']} has no port {port!r}")
                if path["path"] == "/ws":
                    ann = ing["metadata"].get("annotations") or {}
                    for key in ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"):
                        if int(ann.get(key, "60")) < 300:
                            problems.append(f"Ingress/{name_of(ing)}: {key} below 300 s would cut idle WebSockets")

    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind(docs, "HorizontalPodAutoscaler")}
    dep_names = {name_of(d) for d in deployments}
    for target, h in hpas.items():
        if target not in dep_names:
            problems.append(f"HorizontalPodAutoscaler/{name_of(h)}: target Deployment {target!r} is not in the render")
    for d in deployments:
        n = name_of(d)
        if n in AUTOSCALED and n not in hpas:
            problems.append(f"Deployment/{n}: no HorizontalPodAutoscaler")
        min_pods = hpas[n]["spec"].get("minReplicas", 1) if n in hpas else d["spec"].get("replicas", 1)
        pdbs = [p for p in by_kind(docs, "PodDisruptionBudget") if labels_match(p["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        if len(pdbs) != 1:
            problems.append(f"Deployment/{n}: {len(pdbs)} PodDisruptionBudgets select it, expected 1")
        for p in pdbs:
            if p["spec"].get("minAvailable", 0) >= min_pods:
                problems.append(f"PodDisruptionBudget/{name_of(p)}: minAvailable {p['spec']['minAvailable']} with {min_pods} pods blocks every drain")
        pols = [p for p in by_kind(docs, "NetworkPolicy") if labels_match(p["spec"]["podSelector"], d["spec"]["template"]["metadata"]["labels"])]
        if not pols:
            problems.append(f"Deployment/{n}: no NetworkPolicy selects it")
        for p in pols:
            if set(p["spec"].get("policyTypes", [])) != {"Ingress", "Egress"}:
                problems.append(f"NetworkPolicy/{name_of(p)}: should restrict both Ingress and Egress")

    all_pods = pods + [{"name": "(operator pod)", **p} for p in op_pods]
    for pol in by_kind(docs, "NetworkPolicy"):
        n = name_of(pol)
        if not any(labels_match(pol["spec"]["podSelector"], p["labels"]) for p in pods):
            problems.append(f"NetworkPolicy/{n}: podSelector matches no pod")
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in pol["spec"].get(direction, []):
                for peer in rule.get(key, []):
                    if "podSelector" not in peer or "namespaceSelector" in peer:
                        continue
                    matched = [p for p in all_pods if labels_match(peer["podSelector"], p["labels"])]
                    if not matched:
                        problems.append(f"NetworkPolicy/{n}: {direction} peer {peer['podSelector']} matches no pod in the render")
                    if direction == "egress":
                        for port in rule.get("ports", []):
                            if matched and not any(port["port"] in p["ports"] for p in matched):
                                problems.append(f"NetworkPolicy/{n}: egress port {port['port']} is not a port of {peer['podSelector']}")

    for q in by_kind(docs, "Queue"):
        ref = q["spec"]["rabbitmqClusterReference"]["name"]
        if ref not in {name_of(r) for r in by_kind(docs, "RabbitmqCluster")}:
            problems.append(f"Queue/{name_of(q)}: RabbitmqCluster {ref!r} is not in the render")
        queue_cfg = [c for c in by_kind(docs, "ConfigMap") if "HISTORY__AMQP__QUEUE" in (c.get("data") or {})]
        if not any(c["data"]["HISTORY__AMQP__QUEUE"] == q["spec"]["name"] for c in queue_cfg):
            problems.append(f"Queue/{name_of(q)}: {q['spec']['name']!r} is not the HISTORY__AMQP__QUEUE history-service uses")
        if q["spec"].get("type") != "quorum" or not q["spec"].get("durable"):
            problems.append(f"Queue/{name_of(q)}: the history queue should be a durable quorum queue")
    if by_kind(docs, "RabbitmqCluster") and not by_kind(docs, "Queue"):
        problems.append("RabbitmqCluster without the history Queue resource")
    for mdb in by_kind(docs, "MongoDBCommunity"):
        for user in mdb["spec"]["users"]:
            ref = user["passwordSecretRef"]
            if ref["name"] not in secrets:
                problems.append(f"MongoDBCommunity/{name_of(mdb)}: user {user['name']}'s password Secret {ref['name']!r} is not templated")
            elif ref.get("key", "password") not in secrets[ref["name"]]:
                problems.append(f"MongoDBCommunity/{name_of(mdb)}: Secret {ref['name']!r} lacks key {ref.get('key', 'password')!r}")

    if overlay != "deploy/k8s/base":
        for d in deployments:
            for c in d["spec"]["template"]["spec"]["containers"]:
                image = c["image"]
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                if not tag or tag == "latest":
                    problems.append(f"Deployment/{name_of(d)}: image {image!r} has no fixed tag")
    for s in by_kind(docs, "Secret"):
        problems.append(f"Secret/{name_of(s)} is part of the render: `kubectl apply -k` would overwrite the real one")
    return problems


def check_workload_policy(docs: list[dict]) -> list[str]:
    problems: list[str] = []
    for d in by_kind(docs, "Deployment"):
        n = name_of(d)
        pod = d["spec"]["template"]["spec"]
        psc = pod.get("securityContext") or {}
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{n}: mounts a service account token it does not use")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        for c in pod["containers"]:
            csc = c.get("securityContext") or {}
            if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and (csc.get("runAsUser", psc.get("runAsUser")) or 0) > 0):
                problems.append(f"{n}/{c['name']}: not forced to run as non-root with a numeric user")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{n}/{c['name']}: allowPrivilegeEscalation is not false")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{n}/{c['name']}: root filesystem is writable")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{n}/{c['name']}: capabilities are not dropped")
            if (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{n}/{c['name']}: no RuntimeDefault seccomp profile")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        problems.append(f"{n}/{c['name']}: no {r} {part[:-1]}")
            for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
                got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                if got != path:
                    problems.append(f"{n}/{c['name']}: {probe} should call {path}, calls {got}")
            cmd = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
            pause = int(cmd[1]) if len(cmd) == 2 and cmd[0] == "sleep" else 0
            needed = 30 if n == "chat-gateway" else 25
            if grace - pause < needed:
                problems.append(f"{n}: {grace - pause} s left for shutdown after the preStop pause, needs {needed}")
            if n == "chat-gateway":
                iid = [e for e in c.get("env", []) if e["name"] == "GATEWAY__AMQP__INSTANCE_ID"]
                if not iid or ((iid[0].get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "metadata.name":
                    problems.append("chat-gateway: GATEWAY__AMQP__INSTANCE_ID must come from the pod name")
    return problems


def read_template_secrets(paths: list[str], schemas: Schemas) -> tuple[dict[str, set[str]], list[str]]:
    secrets: dict[str, set[str]] = {}
    problems: list[str] = []
    for rel in paths:
        for doc in load_yaml_docs((ROOT / rel).read_text()):
            problems += [f"{rel}: {p}" for p in schemas.validate(doc)]
            if doc.get("kind") != "Secret":
                problems.append(f"{rel}: holds a {doc.get('kind')}, only Secrets belong there")
                continue
            values = {**(doc.get("stringData") or {}), **(doc.get("data") or {})}
            for key, value in values.items():
                if not str(value).startswith("REPLACE-"):
                    problems.append(f"{rel}: Secret/{name_of(doc)} key {key!r} holds a value, not a REPLACE- placeholder")
            secrets[name_of(doc)] = set(values)
    return secrets, problems


def check_kubernetes(report: Report, kustomize: str) -> None:
    schemas = Schemas()
    for overlay, template_files in OVERLAYS.items():
        res = run([kustomize, "build", str(ROOT / overlay)])
        if not report.record(f"k8s {overlay}: kustomize build renders", [res.stderr.strip()] if res.returncode else []):
            continue
        docs = load_yaml_docs(res.stdout)
        kinds = sorted({f"{d['kind']}" for d in docs})
        problems = []
        for doc in docs:
            problems += schemas.validate(doc)
        builtin = sum(1 for d in docs if (d.get("apiVersion"), d.get("kind")) not in schemas.crd)
        custom = len(docs) - builtin
        report.record(
            f"k8s {overlay}: {builtin} objects valid against the Kubernetes {' and '.join(K8S_VERSIONS)} schemas (strict), "
            f"{custom} operator objects against deploy/validate/schemas [{', '.join(kinds)}]",
            problems,
        )
        template_secrets, problems = read_template_secrets(template_files, schemas)
        report.record(f"k8s {overlay}: Secret templates are valid and hold only placeholders", problems)
        report.record(
            f"k8s {overlay}: references resolve (selectors, ports, ConfigMaps, Secrets, $(VAR) order, "
            "Ingress, HPA, PDB, NetworkPolicy peers, history queue)",
            check_references(docs, template_secrets, overlay),
        )
        report.record(f"k8s {overlay}: every Deployment has probes, resources, non-root hardening and shutdown time",
                      check_workload_policy(docs))
        if overlay.endswith("example"):
            per_service = {}
            cms = {name_of(c): c.get("data") or {} for c in by_kind(docs, "ConfigMap")}
            for d in by_kind(docs, "Deployment"):
                for c in d["spec"]["template"]["spec"]["containers"]:
                    env: dict[str, str | None] = {}
                    for ef in c.get("envFrom", []):
                        env.update(cms.get((ef.get("configMapRef") or {}).get("name"), {}))
                    env.update({e["name"]: e.get("value") for e in c.get("env", [])})
                    per_service[c["name"]] = env
            warn_unknown_settings(report, overlay, per_service, by_target={n: n for n in per_service})


def warn_unknown_settings(report: Report, where: str, env_by_service: dict[str, dict], by_target: dict[str, str]) -> None:
    """Settings that the service's compiled-in defaults do not list (a typo, or a default kept in code)."""
    for name, env in env_by_service.items():
        service = by_target.get(name)
        if service not in SERVICES:
            continue
        prefix = SERVICES[service]["prefix"]
        defaults_file = ROOT / service / "config/default.toml"
        if not defaults_file.exists():
            report.warn(f"{where}: {service}/config/default.toml does not exist yet; {prefix}__* names in {name} not compared")
            continue
        defaults = tomllib.loads(defaults_file.read_text())
        for var, value in env.items():
            if var == "APP_ENVIRONMENT" and value not in (None, "development", "production"):
                report.warn(f"{where}: {name}: APP_ENVIRONMENT={value!r} is neither development nor production")
            if not var.startswith(prefix + "__"):
                continue
            node = defaults
            for part in var[len(prefix) + 2:].lower().split("__"):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                report.warn(f"{where}: {name}: {var} is not among the keys of {service}/config/default.toml")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kustomize", required=True)
    parser.add_argument("--deploy-check", required=True)
    args = parser.parse_args()

    report = Report()
    print("== docker compose")
    check_compose(report, args.deploy_check)
    print("== Dockerfile")
    check_dockerfile(report, args.deploy_check)
    print("== Kubernetes")
    check_kubernetes(report, args.kustomize)

    print()
    print("Verified here, statically: the compose file as `docker compose` would load it; the Dockerfile")
    print("against BuildKit's checks and this project's rules; every rendered Kubernetes manifest against the")
    print("Kubernetes API schemas, the operator resources against schemas kept in deploy/validate/schemas,")
    print("and the references between the manifests.")
    print("Not verified here: no image was built and no container was run (there is no Docker engine), no")
    print("manifest was applied to a cluster (no admission webhooks, operators, ingress controller or")
    print("NetworkPolicy enforcement), and the operators' real CRD schemas were not used.")
    if report.warnings:
        print(f"{len(report.warnings)} warning(s) above do not fail the run.")
    print(f"validate-deploy: {len(report.passed)} passed, {len(report.failed)} failed, {len(report.skipped)} skipped")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
