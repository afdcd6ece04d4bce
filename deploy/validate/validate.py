#!/usr/bin/env python3
"""Static checks of the deployment files: docker-compose.yml, deploy/Dockerfile, deploy/k8s.

Nothing here needs a Docker engine or a cluster. scripts/validate-deploy.sh installs the tools
first (kustomize, kubeconform and deploy-check from tools/deploy-check, the Python packages from
requirements.txt) and then runs this file with their paths. The schemas kubeconform reads are
made by schemas.py into a cache, from the Kubernetes schemas kubernetes-validate ships and the
operators' CRDs (crds.txt), downloaded through the Go module proxy when the cache is made.

The standard tools check what they can: compose-go loads the compose file, BuildKit lints the
Dockerfile, kustomize renders the manifests and kubeconform validates them. What is left here
are this project's own rules: the services' settings against their config/default.toml, the
references between the objects, the NetworkPolicies against the calls the settings make, the
broker and database users, metrics scraping, and the shape of the images.

Each check prints PASS, FAIL or SKIP with its reasons; the closing line counts them and the
exit status is non-zero when any check failed.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import yaml

import schemas

ROOT = Path(__file__).resolve().parents[2]

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
# Public keys published next to it during a rotation, given the same way.
ADDITIONAL_KEYS_VAR = "AUTH__JWT__ADDITIONAL_PUBLIC_KEYS_PEM"
# ENV names in the Dockerfile that look secret to BuildKit's check but are not.
DOCKERFILE_ALLOWED_ENV = ["AUTH__HTTP__HOST", "AUTH__HTTP__PORT"]
# Settings given in the environment as comma-separated lists (the services load them with
# common::settings::load_with_lists, or its Layout with the same list keys); every other value
# is one scalar.
# Schemes a `uri` setting accepts, by the scheme of its default.
URI_SCHEMES = {"amqp": {"amqp", "amqps"}, "mongodb": {"mongodb", "mongodb+srv"}}
# A `$(NAME)` reference in a container's env value, which Kubernetes expands.
ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
LIST_SETTINGS = {"chat-gateway": {"security.allowed_origins", "amqp.uris"},
                 "auth-service": {"admin.usernames", "amqp.uris"},
                 "history-service": {"amqp.uris"}}
# Files whose text names settings (in values or prose); every name must be a real key.
SETTING_TEXT_FILES = ["docker-compose.yml", ".env.example", "deploy/Dockerfile", "deploy/README.md",
                      "docs/scaling.md", "deploy/k8s/**/*.yaml"]
SETTING_NAME = re.compile(r"\b(AUTH|GATEWAY|HISTORY)__[A-Z0-9_]*[A-Z0-9]")
# The one setting that makes auth-service believe X-Forwarded-For.
TRUST_XFF_VAR = "AUTH__HTTP__TRUST_FORWARDED_FOR"
# Ingress annotations (ingress-nginx) that could change the Host or Origin header the gateway
# compares for its same-origin check.
HEADER_REWRITING_ANNOTATIONS = [
    "nginx.ingress.kubernetes.io/upstream-vhost",
    "nginx.ingress.kubernetes.io/configuration-snippet",
    "nginx.ingress.kubernetes.io/server-snippet",
    "nginx.ingress.kubernetes.io/proxy-set-headers",
]
SOURCE_RANGE_ANNOTATIONS = [
    "nginx.ingress.kubernetes.io/whitelist-source-range",
    "nginx.ingress.kubernetes.io/allowlist-source-range",
]

# The broker users' spec (one line per service role) and which service each role is.
BROKER_SPEC = ROOT / "deploy/rabbitmq/permissions.conf"
BROKER_ROLES = {"chat-gateway": "gateway", "history-service": "history", "auth-service": "auth"}
BROKER_PERMISSIONS = ["configure", "write", "read"]
BROKER_TOPIC_PERMISSIONS = ["write", "read"]

OVERLAYS = {
    # overlay directory: files with the Secrets (and ConfigMaps) it expects to exist beforehand
    "deploy/k8s/base": ["deploy/k8s/base/secret.template.yaml"],
    "deploy/k8s/overlays/example": ["deploy/k8s/base/secret.template.yaml"],
    "deploy/k8s/overlays/external-services": [
        "deploy/k8s/base/secret.template.yaml",
        "deploy/k8s/overlays/external-services/secrets.template.yaml",
    ],
    "deploy/k8s/overlays/external-services-private-ca": [
        "deploy/k8s/base/secret.template.yaml",
        "deploy/k8s/overlays/external-services/secrets.template.yaml",
        "deploy/k8s/overlays/external-services-private-ca/ca.template.yaml",
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


def run(cmd: list[str], input: str | None = None, **kw) -> subprocess.CompletedProcess:
    if input is None:
        kw["stdin"] = subprocess.DEVNULL
    return subprocess.run(cmd, capture_output=True, text=True, input=input, **kw)


def load_yaml_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


# ---------------------------------------------------------------------------------------------
# Service settings: the keys of each service's config/default.toml


@cache
def service_defaults(service: str) -> dict:
    return tomllib.loads((ROOT / service / "config/default.toml").read_text())


def service_of_setting(var: str) -> str | None:
    prefix = var.split("__", 1)[0]
    return next((s for s, info in SERVICES.items() if info["prefix"] == prefix), None)


def lookup_setting(var: str) -> tuple[str | None, list[str], object]:
    """(service, key path, default value or section); the default is None for an unknown name."""
    service = service_of_setting(var)
    if service is None:
        return None, [], None
    path = var.split("__")[1:]
    node: object = service_defaults(service)
    for part in path:
        node = node.get(part.lower()) if isinstance(node, dict) else None
    return service, [p.lower() for p in path], node


ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?/?")


def setting_problems(where: str, service: str, var: str, value: str | None) -> list[str]:
    """A setting given to `service`: it must be one of that service's keys, with a value of the
    default's type. `value` None: not a literal here (from a Secret, or passed through)."""
    owner, path, default = lookup_setting(var)
    if owner != service:
        return [f"{where}: {var} is set for {service}, but it is a setting of {owner or 'no service'}"]
    if default is None:
        return [f"{where}: {var} is not a key of {service}/config/default.toml"]
    if isinstance(default, dict):
        return [f"{where}: {var} names the section [{'.'.join(path)}], not a key"]
    if value is None:
        return []
    text = str(value).strip()
    dotted = ".".join(path)
    if isinstance(default, bool):
        ok = text.lower() in ("true", "false")
    elif isinstance(default, int):
        ok = re.fullmatch(r"[0-9]+", text) is not None
    elif isinstance(default, list):
        if dotted not in LIST_SETTINGS.get(service, set()):
            return [f"{where}: {var} is a list the service does not read from the environment"]
        items = [i.strip() for i in text.split(",")]
        bad = [i for i in items if not ORIGIN.fullmatch(i)] if dotted == "security.allowed_origins" else []
        return [f"{where}: {var}: {i!r} is not an origin (scheme://host[:port])" for i in bad]
    elif path[-1] == "url":
        ok = re.fullmatch(r"https?://[^/\s:]+(:[0-9]+)?/?", text) is not None
    elif path[-1] == "uri":
        # The default's scheme, or its TLS form (`amqps`, `mongodb+srv`).
        scheme = str(default).split("://", 1)[0]
        ok = text.split("://", 1)[0] in URI_SCHEMES.get(scheme, {scheme})
    else:
        ok = True
    if not ok:
        return [f"{where}: {var}={text!r} does not fit the default {default!r}"]
    return []


def connection_settings(service: str) -> list[str]:
    """The service's settings that say where its dependencies are (keys named `uri` or `url`)."""
    prefix = SERVICES[service]["prefix"]
    found = []
    for section, keys in service_defaults(service).items():
        if isinstance(keys, dict):
            found += [f"{prefix}__{section.upper()}__{k.upper()}" for k in keys if k in ("uri", "url")]
    return found


def is_loopback(value: str) -> bool:
    try:
        host = urlsplit(value).hostname or ""
    except ValueError:
        return False
    return host in ("localhost", "127.0.0.1", "::1")


def check_setting_names_in_text() -> list[str]:
    """Every AUTH__/GATEWAY__/HISTORY__ name written in the deployment files and their docs
    names a key or a section of the service's config/default.toml (prose may name a whole
    section, as in `GATEWAY__LIMITS__*`)."""
    problems = []
    files: list[Path] = []
    for pattern in SETTING_TEXT_FILES:
        files += sorted(ROOT.glob(pattern))
    for f in files:
        for lineno, line in enumerate(f.read_text().splitlines(), 1):
            for m in SETTING_NAME.finditer(line):
                var = m.group(0)
                service, path, default = lookup_setting(var)
                if service is None or default is None:
                    problems.append(f"{f.relative_to(ROOT)}:{lineno}: {var} is not a key or section of "
                                    f"{service or 'any service'}/config/default.toml")
    return problems


# ---------------------------------------------------------------------------------------------
# Broker users: deploy/rabbitmq/permissions.conf, as deploy/rabbitmq/provision.sh reads it


def broker_spec(exchange: str, history_queue: str) -> dict[str, dict[str, str]]:
    """role -> {configure, write, read, topic-write, topic-read}, the names filled in."""
    spec = {}
    for line in BROKER_SPEC.read_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        role, *regexes = fields
        if len(regexes) != 5:
            raise ValueError(f"{BROKER_SPEC.relative_to(ROOT)}: the line of {role!r} needs six columns")
        # As provision.sh escapes them: the names hold no regex metacharacter but the dot.
        names = {"{exchange}": exchange.replace(".", r"\."), "{history_queue}": history_queue.replace(".", r"\.")}
        for placeholder, value in names.items():
            regexes = [r.replace(placeholder, value) for r in regexes]
        spec[role] = dict(zip(BROKER_PERMISSIONS + ["topic-write", "topic-read"], regexes))
    return spec


def amqp_user(uri: str | None) -> str | None:
    try:
        return urlsplit(uri or "").username
    except ValueError:
        return None


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


def dockerfile_stages(deploy_check: str, path: Path) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> [(INSTRUCTION, arguments)], as BuildKit's parser reads the Dockerfile."""
    res = run([deploy_check, "stages", str(path)])
    if res.returncode != 0:
        raise SystemExit(f"{path}: {res.stderr.strip()}")
    return {name: [(i, a) for i, a in instrs] for name, instrs in json.loads(res.stdout).items()}


def check_compose(report: Report, deploy_check: str) -> None:
    compose_path = ROOT / "docker-compose.yml"
    example = ROOT / ".env.example"

    project, err = compose_load(deploy_check, None)
    report.record(
        "compose: docker-compose.yml loads with compose-go (schema, interpolation, references to services, "
        "volumes, networks, secrets and env_files), no .env as on a fresh clone",
        [err] if project is None else [],
    )
    with_example, err = compose_load(deploy_check, example)
    report.record(
        "compose: loads with .env.example copied to .env", [err] if with_example is None else []
    )

    name = ("compose: a key from `openssl genpkey -algorithm ed25519` appended to .env as documented, and a previous "
            "key's public half for rotation, reach auth-service intact, and only auth-service")
    openssl = shutil.which("openssl")
    if openssl is None:
        report.skip(name, "openssl is not installed")
    else:
        problems: list[str] = []
        key = run([openssl, "genpkey", "-algorithm", "ed25519"])
        previous = run([openssl, "genpkey", "-algorithm", "ed25519"])
        public = run([openssl, "pkey", "-pubout"], input=previous.stdout) if previous.returncode == 0 else previous
        if key.returncode != 0 or public.returncode != 0:
            problems.append(f"openssl failed: {(key.stderr + public.stderr).strip()}")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                env_file = Path(tmp) / ".env"
                pems = {SIGNING_KEY_VAR: key.stdout.strip(), ADDITIONAL_KEYS_VAR: public.stdout.strip()}
                env_file.write_text(example.read_text() + "".join(f'{var}="{pem}"\n' for var, pem in pems.items()))
                loaded, err = compose_load(deploy_check, env_file)
                if loaded is None:
                    problems.append(err)
                else:
                    for svc_name, svc in loaded["services"].items():
                        for var, pem in pems.items():
                            got = (svc.get("environment") or {}).get(var)
                            if svc_name == "auth-service":
                                if (got or "").strip() != pem:
                                    problems.append(f"auth-service gets {var}={got!r}, not the PEM")
                            elif got is not None:
                                problems.append(f"{svc_name} also receives {var}")
        report.record(name, problems)

    raw = yaml.safe_load(compose_path.read_text())
    services: dict = raw.get("services") or {}

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
    stages = dockerfile_stages(deploy_check, ROOT / "deploy/Dockerfile")
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

    # Values as compose resolves them with .env.example; names also from the file itself,
    # where an entry without a value is passed through from .env.
    resolved = (with_example or {}).get("services") or {}
    ours = {n: (s.get("build") or {}).get("target") for n, s in services.items()
            if (s.get("build") or {}).get("target") in SERVICES}

    problems = []
    for svc_name, target in ours.items():
        values = {**env_map(services[svc_name]), **(resolved.get(svc_name, {}).get("environment") or {})}
        for var, value in values.items():
            if var == "APP_ENVIRONMENT" and value not in (None, "development", "production"):
                problems.append(f"{svc_name}: APP_ENVIRONMENT={value!r} is neither development nor production")
            if SETTING_NAME.fullmatch(var):
                problems += setting_problems(svc_name, target, var, value)
    example_text = example.read_text()
    for m in re.finditer(r"^#?\s*((?:AUTH|GATEWAY|HISTORY)__\w+)=(.*)$", example_text, re.MULTILINE):
        var, value = m.group(1), m.group(2).strip()
        if value.startswith('"') and not (len(value) > 1 and value.endswith('"')):
            value = None  # a quoted value spanning lines (PEM)
        elif len(value) > 1 and value[0] == value[-1] and value[0] in ('"', "'"):
            value = value[1:-1]
        problems += setting_problems(".env.example", service_of_setting(var) or "?", var, value)
    report.record("compose: every service setting it sets or passes through, and every one in .env.example, is a key "
                  "of the service's config/default.toml with a value of the default's type", problems)

    problems = []
    for svc_name, target in ours.items():
        values = {**env_map(services[svc_name]), **(resolved.get(svc_name, {}).get("environment") or {})}
        waits = depends_on_names(services[svc_name])
        for var in connection_settings(target):
            value = values.get(var)
            if not value:
                problems.append(f"{svc_name}: {var} is not set, so it would use the default on 127.0.0.1")
                continue
            if is_loopback(value):
                problems.append(f"{svc_name}: {var} points at the container itself")
            host = urlsplit(value).hostname
            if host in services and waits.get(host) != "service_healthy":
                problems.append(f"{svc_name}: {var} uses {host}, but {svc_name} does not wait for {host} to be healthy")
    report.record("compose: every service is given the address of each dependency its settings name "
                  "(*__URI, *__URL), and waits for it to be healthy", problems)

    problems = []
    auth = [n for n, t in ours.items() if t == "auth-service"]
    for svc_name in auth:
        svc = services[svc_name]
        trusted = str(env_map(svc).get(TRUST_XFF_VAR)).lower() == "true"
        reachable = bool(svc.get("ports")) or svc.get("network_mode") == "host"
        if trusted and reachable:
            problems.append(f"{svc_name}: {TRUST_XFF_VAR}=true, but clients can reach it directly and choose their own address")
        if not trusted and not reachable:
            problems.append(f"{svc_name}: reachable only through the gateways, which append the client address "
                            f"to X-Forwarded-For, but {TRUST_XFF_VAR} is not true: every client shares one limit")
        for other, target in ours.items():
            if target == "auth-service" or not any(
                urlsplit(v or "").hostname == svc_name for v in env_map(services[other]).values()
                if isinstance(v, str) and "://" in v
            ):
                continue
            if target != "chat-gateway" and services[other].get("ports"):
                problems.append(f"{other} publishes ports and calls {svc_name}; only the gateways may stand in front of it")
    report.record("compose: auth-service believes X-Forwarded-For exactly when it publishes no port "
                  "(clients reach it only through a gateway)", problems)

    report.record("compose: each service reaches RabbitMQ as its own user, which `rabbitmq-users` creates from "
                  "deploy/rabbitmq/permissions.conf first; AMQP is not published and the management UI only "
                  "on 127.0.0.1", check_compose_broker(services, ours, resolved))


def check_compose_broker(services: dict, ours: dict[str, str], resolved: dict) -> list[str]:
    problems = []
    roles = broker_spec("chat.events", "chat.history")
    provisioners = [n for n, svc in services.items()
                    if "provision.sh" in " ".join(svc.get("entrypoint") or [])
                    and any(str(v).startswith("./deploy/rabbitmq:") for v in svc.get("volumes") or [])]
    if len(provisioners) != 1:
        problems.append(f"{len(provisioners)} services run deploy/rabbitmq/provision.sh, expected one")
    admin = (resolved.get("rabbitmq", {}).get("environment") or {}).get("RABBITMQ_DEFAULT_USER")
    users: dict[str, str] = {}
    for svc_name, target in ours.items():
        env = {**env_map(services[svc_name]), **(resolved.get(svc_name, {}).get("environment") or {})}
        uri = env.get(f"{SERVICES[target]['prefix']}__AMQP__URI")
        if uri is None:
            continue
        user, role = amqp_user(uri), BROKER_ROLES[target]
        if role not in roles:
            problems.append(f"{svc_name}: deploy/rabbitmq/permissions.conf has no line for {role}")
        if user != f"chat-{role}":
            problems.append(f"{svc_name}: connects to RabbitMQ as {user!r}, not chat-{role}")
        if user == admin:
            problems.append(f"{svc_name}: connects as the administrator")
        if users.setdefault(user, target) != target:
            problems.append(f"{svc_name}: shares the broker user {user} with {users[user]}")
        if provisioners and depends_on_names(services[svc_name]).get(provisioners[0]) != "service_completed_successfully":
            problems.append(f"{svc_name}: does not wait for {provisioners[0]} to create its broker user")
    for port in services.get("rabbitmq", {}).get("ports") or []:
        text = str(port) if not isinstance(port, dict) else f"{port.get('host_ip', '')}:{port.get('published')}:{port.get('target')}"
        if text.rsplit(":", 1)[-1] == "5672":
            problems.append(f"rabbitmq: publishes AMQP ({text})")
        elif not text.startswith("127.0.0.1:"):
            problems.append(f"rabbitmq: publishes {text} beyond 127.0.0.1")
    return problems


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

    stages = dockerfile_stages(deploy_check, path)
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

    ignore = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    problems = check_build_scope(stages, members, ignore)
    report.record("Dockerfile: cargo-chef cooks and cargo builds only the three services (-p each); the builder "
                  "has every workspace member's manifest and targets; every COPY source exists and is in the "
                  "build context", problems)

    problems = []
    for must in [".git", "target", "**/node_modules", ".env", ".local"]:
        if must not in ignore:
            problems.append(f".dockerignore does not exclude {must}")
    for keep in ["Cargo.lock", "Cargo.toml", "web/package-lock.json", "web"]:
        if keep in ignore:
            problems.append(f".dockerignore excludes {keep}, which the build needs")
    for manifest in cargo_manifests():
        crate = manifest.parent.relative_to(ROOT).as_posix()
        if crate != "." and not any(crate == m or crate.startswith(m + "/") for m in members) \
                and not dockerignored(crate, ignore):
            problems.append(f".dockerignore does not exclude {crate}, a crate outside the workspace")
    report.record(".dockerignore: keeps VCS data, build output, dependencies, .env and crates outside the "
                  "workspace out of the build context", problems)


def cargo_manifests() -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in ("target", "node_modules", ".git", ".local")]
        if "Cargo.toml" in filenames:
            found.append(Path(dirpath) / "Cargo.toml")
    return found


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves `path` (relative, with /) out of the build context: a
    pattern matches the path or one of its parent directories (`*` within a name, `**` any
    number of directories)."""
    def regex(pattern: str) -> re.Pattern:
        out = ""
        for part in re.split(r"(\*\*/|\*|\?)", pattern.strip("/")):
            out += {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        return re.compile(out)
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(regex(p).fullmatch(prefix) for p in patterns if not p.startswith("!") for prefix in prefixes)


def check_build_scope(stages: dict[str, list[tuple[str, str]]], members: list[str], ignore: list[str]) -> list[str]:
    problems = []
    wanted = set(SERVICES)
    builder = stages.get("builder", [])
    runs = [a for i, a in builder if i == "RUN"]
    for what, needle in (("cargo chef cook", "cargo chef cook"), ("cargo build", "cargo build")):
        cmd = next((r for r in runs if needle in r), None)
        if cmd is None:
            problems.append(f"builder stage does not run {what}")
            continue
        packages = set(re.findall(r"(?:-p|--package)[ =]([A-Za-z0-9_-]+)", cmd))
        if "--workspace" in cmd or packages != wanted:
            problems.append(f"builder: {what} builds {sorted(packages) or 'the whole workspace'}, "
                            f"not just {sorted(wanted)}")
    sources = []
    for stage, instrs in stages.items():
        for instr, args in instrs:
            if instr != "COPY" or "--from=" in args:
                continue
            words = [w for w in args.split() if not w.startswith("--")]
            for src in words[:-1]:
                src = src.rstrip("/") or "."
                sources.append((stage, src))
                if src != "." and not (ROOT / src).exists():
                    problems.append(f"{stage}: COPY {src} does not exist")
                if src != "." and dockerignored(src, ignore):
                    problems.append(f"{stage}: COPY {src}, which .dockerignore leaves out of the build context")
    copied = [src for stage, src in sources if stage == "builder"]
    def covered(path: str) -> bool:
        return any(src == "." or path == src or path.startswith(src + "/") for src in copied)
    for member in members:
        if not covered(f"{member}/Cargo.toml"):
            problems.append(f"builder: the workspace member {member} has no Cargo.toml in the build")
        roots = [f"{member}/src/{f}" for f in ("lib.rs", "main.rs") if (ROOT / member / "src" / f).exists()]
        for root in roots:
            if not covered(root):
                problems.append(f"builder: {root} is missing, so cargo finds no target in {member}")
    return problems


# ---------------------------------------------------------------------------------------------
# Kubernetes


class Kubeconform:
    """kubeconform, strict, once per Kubernetes version in K8S_VERSIONS, against the schemas
    schemas.py makes (Kubernetes' own and the operators' CRDs). Every object must have a schema."""

    def __init__(self, binary: str, cache: Path, go: str) -> None:
        schemas.ensure(cache, go, K8S_VERSIONS)
        self.cmd = [binary, "-strict", "-output", "json", "-verbose"]
        for location in schemas.locations(cache):
            self.cmd += ["-schema-location", location]

    def validate(self, text: str, where: str = "") -> tuple[list[str], list[str]]:
        """(kinds found, problems) for the manifests in `text`."""
        kinds: set[str] = set()
        # A problem found with several versions' schemas is told once, naming them.
        problems: dict[str, list[str]] = {}
        for version in K8S_VERSIONS:
            res = run([*self.cmd, "-kubernetes-version", f"{version}.0", "-"], input=text)
            try:
                resources = json.loads(res.stdout)["resources"]
            except (ValueError, KeyError):
                problems.setdefault(f"kubeconform: {(res.stdout + res.stderr).strip()}", []).append(version)
                continue
            for r in resources:
                kinds.add(r["kind"])
                if r["status"] == "statusValid":
                    continue
                # kubeconform's message names the schema file, then each error as "at PATH: WHAT";
                # an error that only says a parent failed is left out when its causes are there.
                detail = (r.get("msg") or r["status"]).split("#' - ", 1)[-1]
                errors = [e.strip() for e in re.split(r"\s+- (?=at ')", detail) if e.strip()]
                errors = [e for e in errors if not e.endswith(": validation failed")] or errors
                for e in errors:
                    problems.setdefault(f"{r['kind']}/{r['name']}: {e}", []).append(version)
        return sorted(kinds), [f"{where}{p} (Kubernetes {', '.join(v)})" for p, v in problems.items()]


PROMETHEUS_ADAPTER_VALUES = ROOT / "deploy/monitoring/prometheus-adapter-values.yaml"


def prometheus_adapter_metrics() -> set[str]:
    """The metric names prometheus-adapter's custom rules expose (`name.as`)."""
    values = yaml.safe_load(PROMETHEUS_ADAPTER_VALUES.read_text()) if PROMETHEUS_ADAPTER_VALUES.exists() else {}
    rules = ((values or {}).get("rules") or {}).get("custom") or []
    return {r["name"]["as"] for r in rules if (r.get("name") or {}).get("as")}


def service_exports_metric(service: str, name: str) -> bool:
    """Whether the service's source registers a metric of that name (a quoted literal)."""
    return any(f'"{name}"' in f.read_text() for f in (ROOT / service / "src").rglob("*.rs"))


# A metric name as the services write it: a string literal, possibly a format! template
# (`"history_{name}_shed_total"`).
METRIC_LITERAL = re.compile(r'"((?:gateway|history|auth|http)_[a-z0-9_{}]+)"')
# Series a query reads from outside the services: Prometheus' own and kube-state-metrics'.
EXTERNAL_METRICS = re.compile(r"^(up|kube_[a-z0-9_]+)$")


@cache
def exported_metric_patterns() -> list[re.Pattern]:
    """Every metric name the three services (and common) register, as full-match patterns;
    a histogram also exports `_bucket`, `_count` and `_sum` series."""
    patterns = set()
    for crate in [*SERVICES, "common"]:
        for f in (ROOT / crate / "src").rglob("*.rs"):
            for literal in METRIC_LITERAL.findall(f.read_text()):
                patterns.add(re.sub(r"\\\{[a-z_]*\\\}", "[a-z0-9_]+", re.escape(literal)))
    return [re.compile(f"{p}(_bucket|_count|_sum)?") for p in sorted(patterns)]


def unknown_metrics(expr: str) -> list[str]:
    """Metric names `expr` selects that no service exports and that are not external."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    # Label matchers and grouping clauses name labels, not metrics.
    without_strings = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_strings = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", without_strings)
    names = set(re.findall(r"\b([a-z_:][a-z0-9_:]*)\s*(?=\{|\[|\)|$|\s*(?:[<>=!]=?|and|or|unless|/|\*|\+|-))", without_strings))
    keywords = {"sum", "by", "rate", "histogram_quantile", "and", "or", "unless", "le", "without", "max", "min",
                "avg", "count", "on", "ignoring", "bool", "offset", "irate", "increase", "clamp_min", "topk"}
    return sorted(
        n for n in names
        if n not in keywords and not EXTERNAL_METRICS.match(n)
        and not any(p.fullmatch(n) for p in exported_metric_patterns())
    )


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
    adapter_metrics = prometheus_adapter_metrics()
    for d in deployments:
        n = name_of(d)
        if n in AUTOSCALED and n not in hpas:
            problems.append(f"Deployment/{n}: no HorizontalPodAutoscaler")
        if n in hpas and "replicas" in d["spec"]:
            problems.append(f"Deployment/{n}: sets replicas beside HorizontalPodAutoscaler/{name_of(hpas[n])}; "
                            "every apply or GitOps sync would reset the count")
        for metric in (hpas[n]["spec"].get("metrics") or []) if n in hpas else []:
            if metric.get("type") != "Pods":
                continue
            name = metric["pods"]["metric"]["name"]
            if name not in adapter_metrics:
                problems.append(f"HorizontalPodAutoscaler/{name_of(hpas[n])}: Pods metric {name!r} is not exposed by a rule "
                                f"of {PROMETHEUS_ADAPTER_VALUES.relative_to(ROOT)}")
            if not service_exports_metric(n, name):
                problems.append(f"HorizontalPodAutoscaler/{name_of(hpas[n])}: {n} exports no metric {name!r}")
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


def read_template_secrets(paths: list[str], kubeconform: Kubeconform) -> tuple[dict[str, set[str]], list[str]]:
    secrets: dict[str, set[str]] = {}
    problems: list[str] = []
    for rel in paths:
        text = (ROOT / rel).read_text()
        problems += kubeconform.validate(text, f"{rel}: ")[1]
        for doc in load_yaml_docs(text):
            kind = doc.get("kind")
            if kind not in ("Secret", "ConfigMap"):
                problems.append(f"{rel}: holds a {kind}, only Secrets and ConfigMaps belong there")
                continue
            values = {**(doc.get("stringData") or {}), **(doc.get("data") or {})}
            for key, value in values.items():
                if not str(value).startswith("REPLACE-"):
                    problems.append(f"{rel}: {kind}/{name_of(doc)} key {key!r} holds a value, not a REPLACE- placeholder")
            if kind == "Secret":
                secrets[name_of(doc)] = set(values)
    return secrets, problems


def deployment_env(docs: list[dict]) -> dict[str, dict]:
    """Per Deployment: its service (container name), pod labels, the environment it gets
    (ConfigMap values and literal values; None where the value comes from a Secret or the pod)
    and the Secret each variable reads."""
    cms = {name_of(c): c.get("data") or {} for c in by_kind(docs, "ConfigMap")}
    out = {}
    for d in by_kind(docs, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            env: dict[str, str | None] = {}
            secret_refs: dict[str, tuple[str, str]] = {}
            for ef in c.get("envFrom", []):
                env.update(cms.get((ef.get("configMapRef") or {}).get("name"), {}))
            for e in c.get("env", []):
                value = e.get("value")
                if value is not None:
                    # As Kubernetes does: `$(NAME)` of a variable defined before it, whose value
                    # is known here, is replaced by that value; other references stay.
                    value = ENV_REF.sub(lambda m: env.get(m.group(1)) or m.group(0), value)
                env[e["name"]] = value
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret_refs[e["name"]] = (ref["name"], ref["key"])
            out[name_of(d)] = {
                "service": c["name"],
                "labels": d["spec"]["template"]["metadata"]["labels"],
                "annotations": d["spec"]["template"]["metadata"].get("annotations") or {},
                "ports": {p["containerPort"] for p in c.get("ports", [])},
                "env": env,
                "secret_refs": secret_refs,
            }
    return out


def check_k8s_settings(docs: list[dict]) -> list[str]:
    problems = []
    for name, dep in deployment_env(docs).items():
        service, env = dep["service"], dep["env"]
        if service not in SERVICES:
            continue
        for var, value in env.items():
            if var == "APP_ENVIRONMENT" and value not in ("development", "production"):
                problems.append(f"Deployment/{name}: APP_ENVIRONMENT={value!r} is neither development nor production")
            if SETTING_NAME.fullmatch(var):
                problems += setting_problems(f"Deployment/{name}", service, var, value)
        for var in connection_settings(service):
            if var not in env:
                problems.append(f"Deployment/{name}: {var} is not set, so it would use the default on 127.0.0.1")
            elif env[var] is not None and is_loopback(env[var]):
                problems.append(f"Deployment/{name}: {var} points at the pod itself")
        port = env.get(f"{SERVICES[service]['prefix']}__HTTP__PORT")
        if port is not None and int(port) not in dep["ports"]:
            problems.append(f"Deployment/{name}: listens on {port}, which is not a container port")
    return problems


def peer_selects_pods(peer: dict, labels: dict) -> bool:
    """A same-namespace pod peer (or any namespace: `namespaceSelector: {}`) that selects `labels`."""
    if "podSelector" not in peer or peer.get("namespaceSelector") not in (None, {}):
        return False
    return labels_match(peer["podSelector"], labels)


def policy_allows(policies: list[dict], pod: dict, direction: str, other: dict | None, port: int, protocol: str = "TCP") -> bool:
    """Whether a NetworkPolicy selecting `pod` lets it talk to pods labelled `other` (None: an
    address outside the cluster, i.e. an ipBlock) on `port`, in `direction` (ingress/egress)."""
    key = "from" if direction == "ingress" else "to"
    for pol in policies:
        if not labels_match(pol["spec"]["podSelector"], pod) or direction.capitalize() not in pol["spec"].get("policyTypes", []):
            continue
        for rule in pol["spec"].get(direction, []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports):
                continue
            peers = rule.get(key)
            if not peers:
                return True
            for peer in peers:
                if other is None and "ipBlock" in peer:
                    return True
                if other is not None and peer_selects_pods(peer, other):
                    return True
    return False


def check_network_follows_settings(docs: list[dict]) -> list[str]:
    """Every call a service's settings make (auth and history URLs, MongoDB, RabbitMQ, DNS) is
    allowed out by its NetworkPolicy and, inside the namespace, in by the callee's."""
    problems = []
    deps = deployment_env(docs)
    policies = by_kind(docs, "NetworkPolicy")
    services = {name_of(s): s for s in by_kind(docs, "Service")}
    mongo = [{"app": f"{name_of(m)}-svc"} for m in by_kind(docs, "MongoDBCommunity")]
    rabbit = [{"app.kubernetes.io/name": name_of(r)} for r in by_kind(docs, "RabbitmqCluster")]
    for name, dep in deps.items():
        service, env, labels = dep["service"], dep["env"], dep["labels"]
        if service not in SERVICES:
            continue
        needs: list[tuple[str, dict | None, int, str | None]] = []  # what, callee labels, port, callee
        for var, value in env.items():
            owner, path, _ = lookup_setting(var)
            if owner != service or not path:
                continue
            if path[-1] == "url" and value:
                url = urlsplit(value)
                host = (url.hostname or "").split(".")[0]
                svc = services.get(host)
                if svc is None:
                    problems.append(f"Deployment/{name}: {var} names {host!r}, which is not a Service in the render")
                    continue
                sport = next((p for p in svc["spec"]["ports"] if p["port"] == (url.port or 80)), None)
                if sport is None:
                    problems.append(f"Deployment/{name}: {var} uses port {url.port}, which Service/{host} does not offer")
                    continue
                for callee, cdep in deps.items():
                    if labels_match(svc["spec"].get("selector"), cdep["labels"]):
                        target = sport.get("targetPort", sport["port"])
                        if isinstance(target, str):
                            target = next((p["containerPort"] for d in by_kind(docs, "Deployment") if name_of(d) == callee
                                           for c in d["spec"]["template"]["spec"]["containers"]
                                           for p in c.get("ports", []) if p.get("name") == target), None)
                        needs.append((var, cdep["labels"], target, callee))
            elif path == ["mongodb", "uri"]:
                needs += [(var, m, 27017, None) for m in mongo] or [(var, None, 27017, None)]
            elif path == ["amqp", "uri"]:
                amqp_port = int(env.get("AMQP_PORT") or urlsplit(value or "").port or 5672)
                needs += [(var, r, amqp_port, None) for r in rabbit] or [(var, None, amqp_port, None)]
        for what, callee_labels, port, callee in needs:
            where = f"{callee_labels}" if callee_labels is not None else "an external address (ipBlock)"
            if not policy_allows(policies, labels, "egress", callee_labels, port):
                problems.append(f"Deployment/{name}: {what} needs egress to {where} port {port}; no NetworkPolicy allows it")
            if callee is not None and not policy_allows(policies, deps[callee]["labels"], "ingress", labels, port):
                problems.append(f"Deployment/{callee}: {name} calls it ({what}) on port {port}; its NetworkPolicy does not let it in")
        if not policy_allows(policies, labels, "egress", {"k8s-app": "kube-dns"}, 53, "UDP"):
            problems.append(f"Deployment/{name}: no egress to kube-dns on 53/UDP, so no service name resolves")
    return problems


def check_metrics_scraping(docs: list[dict]) -> list[str]:
    """Scrape hints on every pod, and one monitoring peer (namespace and pod labels, documented in
    deploy/README.md) let in on the metrics port."""
    problems = []
    policies = by_kind(docs, "NetworkPolicy")
    readme = (ROOT / "deploy/README.md").read_text()
    monitoring_peers = []
    for name, dep in deployment_env(docs).items():
        service, ann = dep["service"], dep["annotations"]
        if service not in SERVICES:
            continue
        # A service with a metrics listener of its own (`<PREFIX>__METRICS__PORT`) is scraped
        # there; the others on their HTTP port.
        env, prefix = dep["env"], SERVICES[service]["prefix"]
        port = int(env.get(f"{prefix}__METRICS__PORT") or env.get(f"{prefix}__HTTP__PORT")
                   or SERVICES[service]["port"])
        wanted = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
        for key, value in wanted.items():
            if ann.get(key) != value:
                problems.append(f"Deployment/{name}: pod annotation {key} is {ann.get(key)!r}, expected {value!r}")
        found = False
        for pol in policies:
            if not labels_match(pol["spec"]["podSelector"], dep["labels"]):
                continue
            for rule in pol["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    ns = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
                    # Specific pods of another namespace; the ingress controller's peer is
                    # its whole namespace.
                    if not ns or not (peer.get("podSelector") or {}).get("matchLabels"):
                        continue
                    if any(p.get("port") == port for p in rule.get("ports", [])):
                        found = True
                        monitoring_peers.append(peer)
        if not found:
            problems.append(f"Deployment/{name}: no NetworkPolicy lets a monitoring namespace's pods in on the metrics port {port}")
    for peer in monitoring_peers:
        if peer != monitoring_peers[0]:
            problems.append(f"the NetworkPolicies name different monitoring peers: {peer} and {monitoring_peers[0]}")
            break
    if monitoring_peers:
        peer = monitoring_peers[0]
        for k, v in {**peer["namespaceSelector"]["matchLabels"], **((peer.get("podSelector") or {}).get("matchLabels") or {})}.items():
            if f"{k}: {v}" not in readme and f"{k}={v}" not in readme:
                problems.append(f"deploy/README.md does not document the monitoring peer's label {k}: {v}")
    return problems


def check_forwarded_for_trust(docs: list[dict]) -> list[str]:
    """auth-service believes X-Forwarded-For exactly when no client can reach it directly: its
    NetworkPolicy lets in only pods of this render and specific pods of another namespace
    (Prometheus), never a whole namespace or an address range."""
    problems = []
    policies = by_kind(docs, "NetworkPolicy")
    deps = deployment_env(docs)
    for name, dep in deps.items():
        if dep["service"] != "auth-service":
            continue
        trusted = str(dep["env"].get(TRUST_XFF_VAR)).lower() == "true"
        open_to = []
        for pol in policies:
            if not labels_match(pol["spec"]["podSelector"], dep["labels"]):
                continue
            for rule in pol["spec"].get("ingress", []):
                for peer in rule.get("from") or [{"everyone": True}]:
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        if any(labels_match(peer["podSelector"], d["labels"]) and d["service"] not in SERVICES
                               for d in deps.values()):
                            open_to.append(peer)
                    elif not ("podSelector" in peer and (peer.get("podSelector") or {}).get("matchLabels")):
                        open_to.append(peer)
        if trusted and open_to:
            problems.append(f"Deployment/{name}: {TRUST_XFF_VAR}=true, but its NetworkPolicy lets in {open_to}, "
                            "which could send their own X-Forwarded-For")
        if not trusted and not open_to:
            problems.append(f"Deployment/{name}: only the gateways forward clients to it, but {TRUST_XFF_VAR} is not "
                            "true: the limits would count every client as the gateway pod")
    return problems


def check_databases(docs: list[dict], template_secrets: dict[str, set[str]]) -> list[str]:
    """Each service uses a database of its own, through a MongoDB user allowed only that
    database; every Secret the services read is templated, or named in deploy/README.md."""
    problems = []
    readme = (ROOT / "deploy/README.md").read_text()
    users = {}
    for mdb in by_kind(docs, "MongoDBCommunity"):
        for user in mdb["spec"].get("users", []):
            secret = user.get("connectionStringSecretName") or f"{name_of(mdb)}-{user.get('db', 'admin')}-{user['name']}"
            users[secret] = user
    databases: dict[str, str] = {}
    mongo_users: dict[str, str] = {}
    for name, dep in deployment_env(docs).items():
        service, env = dep["service"], dep["env"]
        if service not in SERVICES:
            continue
        for var, (secret, _key) in dep["secret_refs"].items():
            if secret not in template_secrets and secret not in readme:
                problems.append(f"Deployment/{name}: reads Secret {secret}, which neither a template nor deploy/README.md names")
        prefix = SERVICES[service]["prefix"]
        if f"{prefix}__MONGODB__URI" not in env:
            continue
        db = env.get(f"{prefix}__MONGODB__DATABASE")
        if not db:
            problems.append(f"Deployment/{name}: {prefix}__MONGODB__DATABASE is not set (the default `chat` is shared)")
            continue
        if db in databases:
            problems.append(f"Deployment/{name}: database {db!r} is also used by {databases[db]}")
        databases[db] = name
        if f"`{db}`" not in readme:
            problems.append(f"deploy/README.md does not name the database `{db}`")
        secret = dep["secret_refs"].get(f"{prefix}__MONGODB__URI", (None, None))[0]
        if users and secret is not None:
            user = users.get(secret)
            if user is None:
                problems.append(f"Deployment/{name}: reads its MongoDB URI from {secret}, which no MongoDB user writes")
                continue
            if secret in mongo_users:
                problems.append(f"Deployment/{name}: shares the MongoDB user {user['name']} with {mongo_users[secret]}")
            mongo_users[secret] = name
            dbs = {r["db"] for r in user.get("roles", [])}
            if dbs != {db}:
                problems.append(f"MongoDBCommunity user {user['name']}: roles on {sorted(dbs)}, but {name} uses only {db!r}")
    return problems


def check_broker_users(docs: list[dict]) -> list[str]:
    """Each service reaches RabbitMQ as a user of its own, read from its own Secret; with the
    operators, that user has no tags and exactly the permissions deploy/rabbitmq/permissions.conf
    lists for the exchange and history queue the services use."""
    problems = []
    deps = deployment_env(docs)
    history_env = next((d["env"] for d in deps.values() if d["service"] == "history-service"), {})
    exchange = history_env.get("HISTORY__AMQP__EXCHANGE") or service_defaults("history-service")["amqp"]["exchange"]
    queue = history_env.get("HISTORY__AMQP__QUEUE") or service_defaults("history-service")["amqp"]["queue"]
    spec = broker_spec(exchange, queue)
    users = {name_of(u): u for u in by_kind(docs, "User")}
    secrets_of_role: dict[str, str] = {}
    for name, dep in deps.items():
        service = dep["service"]
        if service not in BROKER_ROLES or f"{SERVICES[service]['prefix']}__AMQP__URI" not in dep["env"]:
            continue
        secrets = {secret for var, (secret, _key) in dep["secret_refs"].items() if var.startswith("AMQP_")}
        if len(secrets) != 1:
            problems.append(f"Deployment/{name}: reads its broker credentials from {sorted(secrets)}, expected one Secret")
            continue
        secret = secrets.pop()
        if secret.endswith("-default-user"):
            problems.append(f"Deployment/{name}: connects as the operator's administrator ({secret})")
        role = BROKER_ROLES[service]
        if secrets_of_role.setdefault(role, secret) != secret or list(secrets_of_role.values()).count(secret) > 1:
            problems.append(f"Deployment/{name}: shares the broker Secret {secret} with another service")
        if not by_kind(docs, "RabbitmqCluster"):
            continue
        user = next((u for u in users.values() if (u["spec"].get("importCredentialsSecret") or {}).get("name") == secret), None)
        if user is None:
            problems.append(f"Deployment/{name}: no User imports its broker Secret {secret}")
            continue
        if user["spec"].get("tags"):
            problems.append(f"User/{name_of(user)}: has tags {user['spec']['tags']}; service users get none")
        for kind, fields, wanted in (
            ("Permission", BROKER_PERMISSIONS, {f: spec[role][f] for f in BROKER_PERMISSIONS}),
            ("TopicPermission", ["exchange"] + BROKER_TOPIC_PERMISSIONS,
             {"exchange": exchange, "write": spec[role]["topic-write"], "read": spec[role]["topic-read"]}),
        ):
            grants = [g for g in by_kind(docs, kind) if (g["spec"].get("userReference") or {}).get("name") == name_of(user)]
            if len(grants) != 1:
                problems.append(f"User/{name_of(user)}: {len(grants)} {kind} objects, expected 1")
                continue
            got = {f: grants[0]["spec"]["permissions"].get(f, "") for f in fields}
            if got != wanted:
                problems.append(f"{kind}/{name_of(grants[0])}: {got} differs from deploy/rabbitmq/permissions.conf "
                                f"for {role}: {wanted}")
    return problems


def check_ingress_headers_and_metrics(docs: list[dict]) -> list[str]:
    """The Ingresses leave Host and Origin as the browser sent them (the gateway's same-origin
    check compares the two), and no host routes /metrics to the public."""
    problems = []
    routes: dict[str | None, list[tuple[str, str, dict]]] = {}
    for ing in by_kind(docs, "Ingress"):
        ann = ing["metadata"].get("annotations") or {}
        for key in HEADER_REWRITING_ANNOTATIONS:
            if key in ann:
                problems.append(f"Ingress/{name_of(ing)}: {key} may rewrite Host or Origin, which the gateway compares")
        for rule in ing["spec"].get("rules", []):
            for path in rule["http"]["paths"]:
                routes.setdefault(rule.get("host"), []).append((path["path"], path["pathType"], ing))

    def loopback_only(ing: dict) -> bool:
        ann = ing["metadata"].get("annotations") or {}
        ranges = next((ann[k] for k in SOURCE_RANGE_ANNOTATIONS if k in ann), None)
        if not ranges:
            return False
        return all(ipaddress.ip_network(r.strip(), strict=False).is_loopback for r in ranges.split(","))

    for host, paths in routes.items():
        covering = [(p, t, ing) for p, t, ing in paths
                    if (t == "Exact" and p == "/metrics")
                    or (t != "Exact" and (p.rstrip("/") == "" or "/metrics" == p.rstrip("/")
                                          or "/metrics".startswith(p.rstrip("/") + "/")))]
        if not covering:
            continue
        exact = [ing for p, t, ing in covering if t == "Exact"]
        if not exact:
            problems.append(f"host {host or '(any)'}: /metrics reaches the gateway through Ingress/"
                            f"{name_of(covering[0][2])}; add an Exact /metrics path that refuses clients")
        for ing in exact:
            if not loopback_only(ing):
                problems.append(f"Ingress/{name_of(ing)}: routes /metrics for {host or '(any)'} without limiting "
                                "the source range to loopback")
    return problems


def check_kubernetes(report: Report, kustomize: str, kubeconform: Kubeconform) -> None:
    for overlay, template_files in OVERLAYS.items():
        res = run([kustomize, "build", str(ROOT / overlay)])
        if not report.record(f"k8s {overlay}: kustomize build renders", [res.stderr.strip()] if res.returncode else []):
            continue
        docs = load_yaml_docs(res.stdout)
        kinds, problems = kubeconform.validate(res.stdout)
        report.record(
            f"k8s {overlay}: kubeconform (strict): {len(docs)} objects valid against the Kubernetes "
            f"{' and '.join(K8S_VERSIONS)} schemas and the operators' CRDs [{', '.join(kinds)}]",
            problems,
        )
        template_secrets, problems = read_template_secrets(template_files, kubeconform)
        report.record(f"k8s {overlay}: Secret templates are valid and hold only placeholders", problems)
        report.record(
            f"k8s {overlay}: references resolve (selectors, ports, ConfigMaps, Secrets, $(VAR) order, "
            "Ingress, HPA, PDB, NetworkPolicy peers, history queue)",
            check_references(docs, template_secrets, overlay),
        )
        report.record(f"k8s {overlay}: every Deployment has probes, resources, non-root hardening and shutdown time",
                      check_workload_policy(docs))
        report.record(f"k8s {overlay}: every service setting is a key of the service's config/default.toml with a "
                      "value of the default's type; every dependency's address (*__URI, *__URL) is set",
                      check_k8s_settings(docs))
        report.record(f"k8s {overlay}: NetworkPolicies allow every call the settings make (auth, history, MongoDB, "
                      "RabbitMQ, DNS), out of the caller and into the callee",
                      check_network_follows_settings(docs))
        report.record(f"k8s {overlay}: every pod has Prometheus scrape hints for /metrics on its metrics port, and the "
                      "documented monitoring pods may reach that port",
                      check_metrics_scraping(docs))
        report.record(f"k8s {overlay}: auth-service believes X-Forwarded-For exactly when its NetworkPolicy keeps "
                      "clients from reaching it directly", check_forwarded_for_trust(docs))
        report.record(f"k8s {overlay}: each service has a MongoDB database (and user) of its own; every Secret read "
                      "is templated or documented", check_databases(docs, template_secrets))
        report.record(f"k8s {overlay}: Ingresses keep Host and Origin as sent, and refuse /metrics on every host",
                      check_ingress_headers_and_metrics(docs))
        report.record(f"k8s {overlay}: each service reaches RabbitMQ as its own user, without tags and with the "
                      "permissions of deploy/rabbitmq/permissions.conf", check_broker_users(docs))


def check_docs(report: Report) -> None:
    report.record("docs: every setting named in the deployment files and their docs is a key or section of "
                  "the service's config/default.toml", check_setting_names_in_text())


MONITORING = ROOT / "deploy/k8s/monitoring"
DASHBOARD = ROOT / "deploy/monitoring/grafana-dashboard.json"
ALERT_TESTS = ROOT / "deploy/monitoring/alerts.test.yaml"


def check_monitoring(report: Report, kustomize: str, kubeconform: Kubeconform, promtool: str | None) -> None:
    """The PodMonitor, the alert rules (promtool check + unit tests) and the dashboard."""
    res = run([kustomize, "build", str(MONITORING)])
    if not report.record("monitoring: deploy/k8s/monitoring renders", [res.stderr.strip()] if res.returncode else []):
        return
    docs = load_yaml_docs(res.stdout)
    kinds, problems = kubeconform.validate(res.stdout)
    report.record(f"monitoring: kubeconform (strict): {', '.join(kinds)} valid against the Prometheus Operator's CRDs",
                  problems)

    base = run([kustomize, "build", str(ROOT / "deploy/k8s/base")])
    deployments = {name_of(d): d for d in by_kind(load_yaml_docs(base.stdout), "Deployment")}
    problems = []
    monitors = by_kind(docs, "PodMonitor")
    for service in SERVICES:
        pod = deployments[service]["spec"]["template"]
        selected = [m for m in monitors if selector_matches(m["spec"]["selector"], pod["metadata"]["labels"])]
        if not selected:
            problems.append(f"no PodMonitor selects the pods of {service}")
        ports = {p.get("name") for c in pod["spec"]["containers"] for p in c.get("ports") or []}
        for m in selected:
            for endpoint in m["spec"]["podMetricsEndpoints"]:
                if endpoint.get("port") not in ports:
                    problems.append(f"PodMonitor/{name_of(m)}: {service} has no port named {endpoint.get('port')!r}")
            job_label = m["spec"].get("jobLabel")
            if job_label and pod["metadata"]["labels"].get(job_label) != service:
                problems.append(f"PodMonitor/{name_of(m)}: job would be {pod['metadata']['labels'].get(job_label)!r}, "
                                f"the rules and the dashboard expect {service!r}")
    report.record("monitoring: the PodMonitor scrapes every service's metrics port, with the service's name as job",
                  problems)

    rules = by_kind(docs, "PrometheusRule")
    exprs = [(r.get("alert") or r.get("record"), str(r["expr"]))
             for doc in rules for g in doc["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard.get("panels") or []
    problems = []
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    panel_exprs = [(p["title"], t["expr"]) for p in panels for t in p.get("targets") or []]
    for title, expr in exprs + panel_exprs:
        for name in unknown_metrics(expr):
            problems.append(f"{title}: {name} is exported by no service")
    report.record("monitoring: every metric the alert rules and the dashboard read is one the services export "
                  "(or Prometheus' up, kube-state-metrics)", problems)

    name = ("monitoring: `promtool check rules` and `promtool test rules` (deploy/monitoring/alerts.test.yaml) pass; "
            "every dashboard query parses")
    if promtool is None:
        report.skip(name, "promtool is not installed")
        return
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        groups = copy.deepcopy([g for doc in rules for g in doc["spec"]["groups"]])
        for g in groups:
            for r in g["rules"]:
                (r.get("annotations") or {}).pop("description", None)
        (Path(tmp) / "alerts.rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        shutil.copy(ALERT_TESTS, Path(tmp) / "alerts.test.yaml")
        # The dashboard's queries, as recording rules: promtool parses each.
        recorded = [{"record": f"dashboard:panel_{i}", "expr": e.replace("$__rate_interval", "5m")}
                    for i, (_, e) in enumerate(panel_exprs)]
        (Path(tmp) / "dashboard.rules.yaml").write_text(
            yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}, sort_keys=False))
        for cmd in (["check", "rules", "alerts.rules.yaml", "dashboard.rules.yaml"], ["test", "rules", "alerts.test.yaml"]):
            res = run([promtool, *cmd], cwd=tmp)
            if res.returncode != 0:
                problems.append(f"promtool {' '.join(cmd)}:\n{(res.stdout + res.stderr).strip()}")
    report.record(name, problems)


def selector_matches(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against pod labels."""
    if not labels_match({"matchLabels": selector.get("matchLabels") or {}}, labels):
        return False
    for e in selector.get("matchExpressions") or []:
        value, op = labels.get(e["key"]), e["operator"]
        if op == "In" and value not in e.get("values", []):
            return False
        if op == "NotIn" and value in e.get("values", []):
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kustomize", required=True)
    parser.add_argument("--deploy-check", required=True)
    parser.add_argument("--kubeconform", required=True)
    parser.add_argument("--go", required=True, help="go, to download the operators' modules (crds.txt)")
    parser.add_argument("--schema-cache", required=True, type=Path, help="where schemas.py keeps the schemas it makes")
    parser.add_argument("--promtool", help="promtool, for the alert rules (skipped without it)")
    args = parser.parse_args()

    report = Report()
    print("== docker compose")
    check_compose(report, args.deploy_check)
    print("== Dockerfile")
    check_dockerfile(report, args.deploy_check)
    print("== Kubernetes")
    kubeconform = Kubeconform(args.kubeconform, args.schema_cache, args.go)
    check_kubernetes(report, args.kustomize, kubeconform)
    print("== Monitoring")
    check_monitoring(report, args.kustomize, kubeconform, args.promtool)
    print("== Settings named in the files and docs")
    check_docs(report)

    print()
    print("Verified here, statically: the compose file as `docker compose` would load it; the Dockerfile")
    print("against BuildKit's checks and this project's rules; every rendered Kubernetes manifest against the")
    print("Kubernetes API schemas and the operators' CRDs (kubeconform; RabbitmqCluster against a hand-written")
    print("schema), and the references between the manifests; every setting against the services'")
    print("config/default.toml, and the NetworkPolicies against the calls those settings make.")
    print("Not verified here: no image was built and no container was run (there is no Docker engine), and no")
    print("manifest was applied to a cluster (no admission webhooks, operators, ingress controller or")
    print("NetworkPolicy enforcement).")
    if report.warnings:
        print(f"{len(report.warnings)} warning(s) above do not fail the run.")
    print(f"validate-deploy: {len(report.passed)} passed, {len(report.failed)} failed, {len(report.skipped)} skipped")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
