"""Deployment files: docker-compose.yml, deploy/Dockerfile, deploy/k8s/*.yaml.

No Docker engine or cluster is needed. The compose wiring and the manifests are parsed and
checked against what the processes read (DATABASE_URL, RAY_ADDRESS, the Ray token) and
against the security rules in DESIGN.md (never publish Ray's ports; the API is the only
published port; no default secrets). Two checks use external tools when present and skip
otherwise: `docker-compose config` (Debian package docker-compose, or the `docker compose`
plugin) and the `kubernetes-validate` schemas for Kubernetes K8S_VERSION.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"
PYPROJECT = ROOT / "pyproject.toml"

# The Kubernetes version the core manifests are validated against (kubernetes-validate
# ships schemas per minor version; CronJob.spec.timeZone needs >= 1.27).
K8S_VERSION = "1.33.0"
NAMESPACE = "plateau"
RAY_PORTS = {6379, 8265, 10001}  # GCS, dashboard/Jobs, client: never published
SECRETS = ("POSTGRES_PASSWORD", "RAY_AUTH_TOKEN", "PLATEAU_ADMIN_KEY")
API_PORT = 8000
NODE_POOL_LABEL = "plateau.dev/pool"  # service.raycluster.NODE_POOL_LABEL
HEALTH = "/api/v1/health"  # liveness: 200 while the process answers
READY = "/api/v1/ready"  # readiness: 503 while the database is unreachable
# Not core Kubernetes: validated by hand below (RayCluster) or not a cluster object.
CUSTOM_KINDS = {"RayCluster", "Kustomization"}


# --------------------------------------------------------------------------- helpers


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) for each published port."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            if "published" not in p:  # long syntax without `published`: a random host port
                out.append(("", 0, int(p["target"])))
                continue
            out.append((str(p.get("host_ip", "")), int(p["published"]), int(p["target"])))
            continue
        parts = str(p).split("/")[0].rsplit(":", 2)
        if len(parts) == 1:  # "8000": a random host port, on every interface
            out.append(("", 0, int(parts[0])))
        elif len(parts) == 2:
            out.append(("", int(parts[0]), int(parts[1])))
        else:
            out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def required_var(value: str, name: str) -> bool:
    """`value` is exactly ${NAME:?message} (compose refuses to run without NAME)."""
    return re.fullmatch(r"\$\{" + name + r":\?[^}]+\}", value) is not None


@cache  # parsed once per session; tests only read it
def docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def objects(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in docs() if d.get("kind") == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in objects(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def env_with_configmaps(container: dict[str, Any]) -> dict[str, Any]:
    """A container's variables including those from ConfigMaps it loads with envFrom."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
    env.update(container_env(container))
    return env


def secret_ref(value: Any) -> tuple[str, str] | None:
    if isinstance(value, dict) and "secretKeyRef" in value:
        return value["secretKeyRef"]["name"], value["secretKeyRef"]["key"]
    return None


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def ray_cluster() -> dict[str, Any]:
    clusters = objects("RayCluster")
    assert len(clusters) == 1, "expected one RayCluster"
    return clusters[0]


def ray_groups() -> list[tuple[str, dict[str, Any]]]:
    """(node type, group spec) for the head and every worker group."""
    spec = ray_cluster()["spec"]
    return [("head", spec["headGroupSpec"])] + [("worker", g) for g in spec["workerGroupSpecs"]]


def pods() -> dict[str, dict[str, str]]:
    """Every pod the manifests create, by a name, with its labels (as KubeRay labels them)."""
    out = {}
    for kind in ("Deployment", "CronJob"):
        for w in objects(kind):
            tmpl = (
                w["spec"]["jobTemplate"]["spec"]["template"]
                if kind == "CronJob"
                else w["spec"]["template"]
            )
            out[w["metadata"]["name"]] = dict(tmpl["metadata"]["labels"])
    cluster = ray_cluster()["metadata"]["name"]
    for node_type, group in ray_groups():
        labels = dict(group["template"].get("metadata", {}).get("labels", {}))
        labels.update({"ray.io/cluster": cluster, "ray.io/node-type": node_type})
        name = "ray-head" if node_type == "head" else f"ray-{group['groupName']}"
        if node_type == "worker":
            labels["ray.io/group"] = group["groupName"]
        out[name] = labels
    return out


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def allowed(src: dict[str, str] | None, dst: dict[str, str], port: int) -> bool:
    """Would the NetworkPolicies admit TCP from `src` (None: outside the namespace) to `dst`?"""
    policies = [
        p["spec"]
        for p in objects("NetworkPolicy")
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], dst)
    ]
    if not policies:
        return True  # a pod no policy selects is not isolated
    for spec in policies:
        for rule in spec.get("ingress") or []:
            ports = rule.get("ports")
            if ports:
                for p in ports:
                    assert isinstance(p["port"], int), "use numeric ports in NetworkPolicies"
                if not any(p["port"] <= port <= p.get("endPort", p["port"]) for p in ports):
                    continue
            peers = rule.get("from")
            if not peers:
                return True  # any source
            for peer in peers:
                if "ipBlock" in peer or "namespaceSelector" in peer:
                    return True  # conservatively: it may take in any source
                if src is not None and selects(peer["podSelector"], src):
                    return True  # a bare podSelector means pods of this namespace
    return False


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def torch_pin() -> str:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = [d for d in deps if re.match(r"torch\s*[=<>!~\[]", d)]
    assert len(pins) == 1, f"expected one torch requirement in pyproject.toml, got {pins}"
    m = re.fullmatch(r"torch\s*==\s*([0-9][0-9A-Za-z.+]*)", pins[0].strip())
    assert m, f"pyproject.toml must pin torch exactly (torch==X), not {pins[0]!r}"
    return m.group(1)


# --------------------------------------------------------------------------- compose


def test_only_the_api_is_published_and_only_on_loopback() -> None:
    svcs = services()
    assert published(svcs["api"]) == [("127.0.0.1", API_PORT, API_PORT)]
    for name, svc in svcs.items():
        for host_ip, host_port, target in published(svc):
            assert name == "api", f"{name} publishes {host_port}->{target}; only the API may"
            assert target not in RAY_PORTS and host_port not in RAY_PORTS
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip or 'all interfaces'}"
        assert svc.get("network_mode") != "host", f"{name} uses the host network"


def test_services_have_the_database_and_ray_wiring_they_read() -> None:
    svcs = services()
    for name in ("api", "dispatcher", "migrate"):
        url = env_of(svcs[name]).get("DATABASE_URL", "")
        m = re.fullmatch(r"postgresql\+psycopg://plateau:(\$\{[^}]+\})@postgres:5432/plateau", url)
        assert m, f"{name}: DATABASE_URL {url!r} is not the compose Postgres"
        assert required_var(m.group(1), "POSTGRES_PASSWORD"), f"{name}: password must be required"
    # The dispatcher is the Ray driver; the API only checks reachability for /health.
    for name in ("dispatcher", "api"):
        assert env_of(svcs[name]).get("RAY_ADDRESS") == "ray-head:6379", name
    ray_members = ["dispatcher", "ray-head"] + [n for n in svcs if n.startswith("ray-worker")]
    assert len(ray_members) >= 4, "expected a CPU and a GPU worker service"
    for name in ray_members:
        env = env_of(svcs[name])
        assert env.get("RAY_AUTH_MODE") == "token", f"{name}: Ray token auth must be on"
        assert required_var(env.get("RAY_AUTH_TOKEN", ""), "RAY_AUTH_TOKEN"), name
    assert "RAY_AUTH_TOKEN" not in env_of(svcs["api"]), "the API does not join Ray"
    for name in ray_members:
        if name.startswith("ray-worker"):
            cmd = command_of(svcs[name])
            assert cmd[:2] == ["plateau", "worker"] and "ray-head:6379" in " ".join(cmd), name
            # runs read the database URL from their worker's environment, never from Ray
            assert env_of(svcs[name]).get("DATABASE_URL") == env_of(svcs["api"])["DATABASE_URL"]
    assert command_of(svcs["dispatcher"]) == ["plateau", "dispatcher"]


def test_secrets_come_only_from_required_variables() -> None:
    text = COMPOSE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, f"{name} is never used"
        for rest in uses:
            assert rest.startswith(":?"), f"${{{name}{rest}}} has a default or is optional"
        assert not re.search(r"\$" + name + r"\b", text), f"bare ${name} skips the check"
    pg = env_of(services()["postgres"])
    assert required_var(pg.get("POSTGRES_PASSWORD", ""), "POSTGRES_PASSWORD")
    # No literal credential anywhere: every password/token value is a required variable.
    for name, svc in services().items():
        for key, value in env_of(svc).items():
            if re.search(r"PASSWORD|TOKEN|SECRET|KEY", key):
                assert any(required_var(value, s) for s in SECRETS), f"{name}.{key}={value!r}"


def test_ray_head_schedules_nothing_and_keeps_its_dashboard_local() -> None:
    head = services()["ray-head"]
    cmd = command_of(head)
    assert cmd[:3] == ["ray", "start", "--head"]
    for flag in ("--port=6379", "--num-cpus=0", "--dashboard-host=127.0.0.1", "--block"):
        assert flag in cmd, f"ray-head lacks {flag}"
    assert "healthcheck" in head
    deps = services()["dispatcher"]["depends_on"]
    assert deps["ray-head"]["condition"] == "service_healthy"


def test_postgres_api_and_migration_order() -> None:
    svcs = services()
    pg = svcs["postgres"]
    assert str(pg["image"]).startswith("postgres:16")
    assert "pg_isready" in " ".join(map(str, pg["healthcheck"]["test"]))
    volume = next(v for v in pg["volumes"] if str(v).endswith(":/var/lib/postgresql/data"))
    assert volume.split(":")[0] in (compose().get("volumes") or {}), "use a named volume"
    assert pg.get("ports") is None
    api = svcs["api"]
    assert command_of(api) == [
        "plateau", "serve", "--host", "0.0.0.0", "--port", str(API_PORT), "--no-dispatch"
    ]  # fmt: skip
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    # One migrator: the API and dispatcher start after it and do not migrate themselves.
    assert command_of(svcs["migrate"]) == ["plateau", "db", "upgrade"]
    for name in ("api", "dispatcher"):
        assert svcs[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert env_of(api).get("PLATEAU_AUTO_MIGRATE") == "false"
    assert HEALTH in " ".join(map(str, api["healthcheck"]["test"]))


def test_gpu_worker_is_a_profile_with_a_gpu_reservation_and_the_cuda_image() -> None:
    svcs = services()
    gpu = [s for s in svcs.values() if "gpu" in (s.get("profiles") or [])]
    assert len(gpu) == 1
    devices = gpu[0]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    assert gpu[0]["build"]["args"]["TORCH_VARIANT"] != "cpu"
    for name, svc in svcs.items():
        if svc is not gpu[0]:
            assert not svc.get("profiles"), f"{name} would not start by default"
            if "build" in svc:
                assert svc["build"]["args"]["TORCH_VARIANT"] == "cpu", name
        if "build" in svc:  # every variant compose asks for is one the Dockerfile knows
            assert re.fullmatch(r"cpu|cuda|cu\d+", svc["build"]["args"]["TORCH_VARIANT"])
            assert svc["build"]["dockerfile"] == "deploy/Dockerfile"


COMPOSE_TOOLS = [
    pytest.param(["docker-compose"], id="docker-compose"),  # Debian's 1.29
    pytest.param(["docker", "compose"], id="docker compose"),  # the v2 plugin
]


def compose_tool_problem(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} is not installed (Debian: apt-get install docker-compose)"
    probe = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        first = (probe.stderr or probe.stdout).strip().splitlines()[:1]
        return f"`{' '.join(argv)} version` failed: {' '.join(first)[:200]}"
    return None


@pytest.mark.parametrize("argv", COMPOSE_TOOLS)
def test_compose_config_is_valid_and_refuses_missing_secrets(argv: list[str]) -> None:
    problem = compose_tool_problem(argv)
    if problem:
        pytest.skip(problem)
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env = base | {
        "POSTGRES_PASSWORD": "pw0123abcd",
        "RAY_AUTH_TOKEN": "tok0123abcd",
        "PLATEAU_ADMIN_KEY": "k" * 32,
    }
    cmd = [*argv, "-f", str(COMPOSE), "--project-directory", str(ROOT)]
    for extra in ([], ["--profile", "gpu"]):
        ok = subprocess.run(
            [*cmd, *extra, "config", "-q"], env=env, capture_output=True, text=True, timeout=60
        )
        assert ok.returncode == 0, ok.stderr
    for missing in SECRETS:
        env_missing = {k: v for k, v in env.items() if k != missing}
        bad = subprocess.run(
            [*cmd, "config", "-q"], env=env_missing, capture_output=True, text=True, timeout=60
        )
        assert bad.returncode != 0, f"compose accepted a missing {missing}"
        assert missing in bad.stderr + bad.stdout


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_the_pinned_torch_before_the_package() -> None:
    pin = torch_pin()
    steps = dockerfile_instructions()
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    torch_runs = [i for i, (w, r) in enumerate(steps) if w == "RUN" and "torch==" in r]
    assert torch_runs, "the Dockerfile never installs torch==..."
    for i in torch_runs:
        m = re.search(r"torch==(\$\{?(\w+)\}?|[0-9][\w.+]*)", steps[i][1])
        assert m
        version = args.get(m.group(2), "") if m.group(2) else m.group(1)
        assert version == pin, f"Dockerfile installs torch {version!r}, pyproject pins {pin}"
    package = [
        i
        for i, (w, r) in enumerate(steps)
        if w == "RUN" and re.search(r"pip install (\S+ )*\.(\s|$)", r)
    ]
    assert package, "the Dockerfile never runs `pip install .`"
    assert max(torch_runs) < min(package), "torch must be installed before the package"
    # The default variant is CPU torch from the PyTorch CPU index.
    assert args.get("TORCH_VARIANT") == "cpu"
    assert "download.pytorch.org/whl/cpu" in steps[torch_runs[0]][1]


def test_dockerfile_runs_as_a_non_root_user_and_serves_by_default() -> None:
    steps = dockerfile_instructions()
    last_stage = max(i for i, (w, _) in enumerate(steps) if w == "FROM")
    users = [r for w, r in steps[last_stage:] if w == "USER"]
    assert users, "the final stage sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"final USER is {users[-1]}"
    cmd = [r for w, r in steps if w == "CMD"]
    assert cmd and cmd[-1].startswith("["), "CMD in exec form"
    words = yaml.safe_load(cmd[-1])
    assert words[:2] == ["plateau", "serve"] and "0.0.0.0" in words


def test_dockerignore_admits_only_the_package() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore should be an allow-list (start with '*')"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    setuptools = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    packages = {p.rstrip("*") for p in setuptools["packages"]["find"]["include"]}
    missing = packages - admitted
    assert not missing, f"the image would lack packages {missing}"
    assert "pyproject.toml" in admitted
    assert not admitted & {".venv", ".env", ".git", "tests"}


# --------------------------------------------------------------------------- Kubernetes


def core_docs() -> list[Any]:
    return [
        pytest.param(doc, id=f"{name}:{doc['kind']}/{doc['metadata']['name']}")
        for name, doc in docs()
        if doc.get("kind") not in CUSTOM_KINDS
    ]


@pytest.mark.parametrize("doc", core_docs())
def test_core_manifests_validate_against_kubernetes_schemas(doc: dict[str, Any]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    # strict: unknown fields (typos) fail too.
    kv.validate(doc, K8S_VERSION, strict=True)


def test_every_manifest_is_namespaced_and_applied_except_the_secret_template() -> None:
    assert docs(), "no manifests"
    kinds = {d["kind"] for _, d in docs()}
    for kind in ("Namespace", "Secret", "Deployment", "Service", "RayCluster",
                 "ConfigMap", "NetworkPolicy"):  # fmt: skip
        assert kind in kinds, f"no {kind}"
    assert [d["metadata"]["name"] for d in objects("Namespace")] == [NAMESPACE]
    for name, d in docs():
        if d["kind"] not in ("Namespace", "Kustomization"):
            assert d["metadata"].get("namespace") == NAMESPACE, f"{name}: {d['kind']}"
    (kustomization,) = objects("Kustomization")
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    templates = {name for name, d in docs() if d["kind"] == "Secret"}
    assert templates == {"secret.template.yaml"}
    assert listed == files - templates, "kustomization.yaml must apply all but the template"


def test_secret_template_holds_only_marked_placeholders() -> None:
    (secret,) = objects("Secret")
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert set(values) == {
        "DATABASE_URL", "RAY_AUTH_TOKEN", "PLATEAU_ADMIN_KEY"
    }  # fmt: skip
    for key, value in values.items():
        assert "REPLACE_ME" in value, f"{key} is not a marked placeholder"
    # Every secret reference in the manifests points at a key the template defines.
    refs: set[tuple[str, str]] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "secretKeyRef" in node:
                refs.add((node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for _, d in docs():
        walk(d)
        for kind in ("Deployment", "CronJob"):  # secret volumes: their items name keys too
            if d["kind"] == kind:
                for volume in pod_spec(d).get("volumes", []):
                    if "secret" in volume:
                        name = volume["secret"]["secretName"]
                        refs |= {(name, item["key"]) for item in volume["secret"]["items"]}
    assert refs and refs <= {(secret["metadata"]["name"], k) for k in values}, refs


def test_api_deployment_probes_health_and_service_is_cluster_ip() -> None:
    deploy = one("Deployment", "plateau-api")
    spec = pod_spec(deploy)
    (api,) = spec["containers"]
    assert api["command"] == [
        "plateau", "serve", "--host", "0.0.0.0", "--port", str(API_PORT), "--no-dispatch"
    ]  # fmt: skip
    ports = {p.get("name"): p["containerPort"] for p in api["ports"]}
    assert API_PORT in ports.values()
    for probe, path in (("readinessProbe", READY), ("livenessProbe", HEALTH)):
        http = api[probe]["httpGet"]
        assert http["path"] == path, probe
        assert ports.get(http["port"], http["port"]) == API_PORT, probe
    env = env_with_configmaps(api)
    assert secret_ref(env["DATABASE_URL"]) == ("plateau-secrets", "DATABASE_URL")
    assert "RAY_AUTH_TOKEN" not in env, "the API does not join Ray"
    assert env.get("PLATEAU_AUTO_MIGRATE") == "false"
    (init,) = spec["initContainers"]
    assert init["command"] == ["plateau", "db", "upgrade"]
    assert secret_ref(container_env(init)["DATABASE_URL"]) == ("plateau-secrets", "DATABASE_URL")
    assert spec["securityContext"]["runAsNonRoot"] is True
    svc = one("Service", "plateau-api")
    assert svc["spec"].get("type") == "ClusterIP"
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert selects({"matchLabels": svc["spec"]["selector"]}, pod_labels)
    (port,) = svc["spec"]["ports"]
    assert port["port"] == API_PORT
    assert ports.get(port["targetPort"], port["targetPort"]) == API_PORT
    for s in objects("Service"):
        assert s["spec"].get("type", "ClusterIP") == "ClusterIP", s["metadata"]["name"]


def head_address() -> str:
    return f"{ray_cluster()['metadata']['name']}-head-svc:6379"  # KubeRay's head Service


def test_dispatcher_joins_the_ray_cluster_with_the_shared_token() -> None:
    (c,) = pod_spec(one("Deployment", "plateau-dispatcher"))["containers"]
    assert c["command"] == ["plateau", "dispatcher"]
    env = env_with_configmaps(c)
    assert env["RAY_ADDRESS"] == head_address()
    assert env["RAY_AUTH_MODE"] == "token"
    assert secret_ref(env["RAY_AUTH_TOKEN"]) == ("plateau-secrets", "RAY_AUTH_TOKEN")
    assert secret_ref(env["DATABASE_URL"]) == ("plateau-secrets", "DATABASE_URL")
    # The API's health check looks at the same Ray head.
    (api,) = pod_spec(one("Deployment", "plateau-api"))["containers"]
    assert env_with_configmaps(api)["RAY_ADDRESS"] == head_address()


def test_raycluster_shape_by_hand() -> None:
    rc = ray_cluster()
    assert rc["apiVersion"] == "ray.io/v1"
    assert rc["metadata"]["namespace"] == NAMESPACE
    major, minor = (int(x) for x in rc["spec"]["rayVersion"].split(".")[:2])
    assert (major, minor) >= (2, 52), "Ray token authentication needs Ray >= 2.52"
    head = rc["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "the head schedules no runs"
    assert head["rayStartParams"].get("dashboard-host") == "127.0.0.1"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    workers = rc["spec"]["workerGroupSpecs"]
    names = [g["groupName"] for g in workers]
    assert len(names) == len(set(names))
    gpu_groups, cpu_groups = [], []
    for node_type, group in ray_groups():
        for key, value in group["rayStartParams"].items():
            assert isinstance(value, str), f"rayStartParams.{key} must be a string"
        if node_type == "worker":
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        containers = group["template"]["spec"]["containers"]
        assert containers, "a Ray group needs a container"
        c = containers[0]  # KubeRay runs Ray in the first container
        env = container_env(c)
        assert env.get("RAY_AUTH_MODE") == "token", f"{node_type} without token auth"
        assert secret_ref(env.get("RAY_AUTH_TOKEN")) == ("plateau-secrets", "RAY_AUTH_TOKEN")
        for port in c.get("ports", []):
            assert "hostPort" not in port
        assert not group["template"]["spec"].get("hostNetwork")
        limits = c.get("resources", {}).get("limits", {})
        if node_type == "worker":
            # runs read the database URL from their worker's environment, never from Ray
            assert secret_ref(env.get("DATABASE_URL")) == ("plateau-secrets", "DATABASE_URL")
            if int(limits.get("nvidia.com/gpu", 0)) >= 1:
                gpu_groups.append(group)
                assert "cuda" in c["image"] or "cu1" in c["image"], "GPU group, CPU image"
            else:
                cpu_groups.append(group)
                assert "cuda" not in c["image"]
    assert gpu_groups, "no worker group requests nvidia.com/gpu"
    assert cpu_groups, "no CPU worker group"


def pool_of(args: list[str]) -> str | None:
    """The worker-group label of a Ray node's start command (`--labels=...` of `ray start`,
    `--pool` of `plateau worker`)."""
    for i, arg in enumerate(args):
        if arg.startswith("--labels="):
            labels = dict(pair.split("=", 1) for pair in arg.removeprefix("--labels=").split(","))
            return labels.get(NODE_POOL_LABEL)
        if arg == "--pool":
            return args[i + 1]
    return None


def compose_topology() -> dict[str, bool]:
    """{worker group: has a GPU} of the Ray nodes docker-compose.yml starts."""
    found = {}
    for service in services().values():
        command = service.get("command") or []
        if command[:2] in (["ray", "start"], ["plateau", "worker"]):
            devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
            gpu = any("gpu" in d.get("capabilities", []) for d in devices.get("devices", []))
            pool = pool_of(command)
            assert pool is not None, f"a Ray node without {NODE_POOL_LABEL}: {command}"
            found[pool] = gpu
    return found


def kuberay_topology() -> dict[str, bool]:
    """{worker group: has a GPU} of the RayCluster's groups."""
    found = {}
    for _, group in ray_groups():
        labels = group["rayStartParams"].get("labels", "")
        pool = pool_of([f"--labels={labels}"]) if labels else None
        assert pool is not None, f"a Ray group without {NODE_POOL_LABEL}"
        limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
        found[pool] = int(limits.get("nvidia.com/gpu", 0)) >= 1
    return found


def test_compose_and_kuberay_describe_the_same_topology() -> None:
    """A head, a CPU worker group and a GPU worker group, named by the node label every run
    records (workers.train.ray_node), in both; tests/service/test_two_nodes.py runs the head
    and a CPU worker node for real."""
    expected = {"head": False, "cpu-workers": False, "gpu-workers": True}
    assert compose_topology() == expected
    assert kuberay_topology() == expected


def test_plateau_worker_joins_with_its_pool_label() -> None:
    from typer.testing import CliRunner

    from service import cli

    calls: list[list[str]] = []
    original = cli.subprocess.call
    cli.subprocess.call = lambda cmd: calls.append(cmd) or 0  # type: ignore[assignment]
    try:
        args = ["worker", "--address", "ray-head:6379", "--pool", "gpu-workers", "--num-gpus", "1"]
        result = CliRunner().invoke(cli.app, args)
    finally:
        cli.subprocess.call = original  # type: ignore[assignment]
    assert result.exit_code == 0, result.output
    (cmd,) = calls
    assert cmd[cmd.index("start") :] == [
        "start", "--address=ray-head:6379", "--block", "--num-gpus=1",
        f"--labels={NODE_POOL_LABEL}=gpu-workers",
    ]  # fmt: skip


def test_compose_and_kubernetes_run_the_scheduler_and_not_a_cronjob() -> None:
    """One mechanism fires nightly sweeps: `plateau scheduler` on the database (issue 14).
    The API process does not schedule too, and the scheduler needs the database only."""
    assert objects("CronJob") == []
    scheduler = services()["scheduler"]
    assert command_of(scheduler) == ["plateau", "scheduler"]
    assert "DATABASE_URL" in env_of(scheduler)
    assert env_of(services()["api"]).get("PLATEAU_SCHEDULE") == "false"
    deployment = one("Deployment", "plateau-scheduler")
    assert deployment["spec"]["replicas"] >= 2  # replicas are safe: each slot fires once
    (c,) = pod_spec(deployment)["containers"]
    assert c["command"] == ["plateau", "scheduler"]
    env = env_with_configmaps(c)
    assert secret_ref(env["DATABASE_URL"]) == ("plateau-secrets", "DATABASE_URL")
    assert "RAY_AUTH_TOKEN" not in env, "the scheduler is no Ray driver"
    (api,) = pod_spec(one("Deployment", "plateau-api"))["containers"]
    assert env_with_configmaps(api)["PLATEAU_SCHEDULE"] == "false"
    # the API checks webhooks when a schedule is saved, the scheduler before each post:
    # both read the same allowlist, and the reports' links the same public URL
    for variable in ("PLATEAU_WEBHOOK_ALLOWED_HOSTS", "PLATEAU_PUBLIC_URL"):
        assert variable in env and variable in env_with_configmaps(api), variable
        assert variable in env_of(scheduler), variable
    assert "PLATEAU_WEBHOOK_ALLOWED_HOSTS" in env_of(services()["api"])


def test_network_policies_leave_only_the_api_reachable_from_outside() -> None:
    everyone = pods()
    api = everyone["plateau-api"]
    for name, labels in everyone.items():
        for port in (API_PORT, 6379, 8265, 10001, 52365, 10002):
            reachable = allowed(None, labels, port)
            expect = name == "plateau-api" and port == API_PORT
            assert reachable == expect, f"{name}:{port} from outside: {reachable}"
    # ...and what the system needs inside the namespace still works.
    dispatcher, scheduler = everyone["plateau-dispatcher"], everyone["plateau-scheduler"]
    head = everyone["ray-head"]
    ray_pods = [labels for name, labels in everyone.items() if name.startswith("ray-")]
    assert len(ray_pods) >= 3
    assert allowed(dispatcher, head, 6379) and allowed(api, head, 6379)
    for a in ray_pods:
        assert allowed(a, dispatcher, 40000), "Ray nodes call back into the driver"
        for b in ray_pods:
            assert allowed(a, b, 10002)
    # Ray's code-executing ports stay shut to pods that are neither Ray nor its driver.
    for port in (8265, 10001):
        assert not allowed(api, head, port) and not allowed(scheduler, head, port)


# --------------------------------------------------------------------------- identities


def k8s_containers() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for kind in ("Deployment", "CronJob"):
        for w in objects(kind):
            spec = pod_spec(w)
            for c in spec.get("initContainers", []) + spec["containers"]:
                out.append((f"{w['metadata']['name']}/{c['name']}", c))
    for node_type, group in ray_groups():
        for c in group["template"]["spec"]["containers"]:
            out.append((f"ray-{node_type}/{c['name']}", c))
    return out


def test_the_api_gets_the_first_admin_key_from_a_secret_everywhere_it_binds_all_interfaces():
    """Bound to 0.0.0.0, `plateau serve` requires API keys and refuses to start without a
    usable one (service/auth.py), so every deployment gives the first admin's key as a
    secret: a required variable in compose, a file from the Secret on Kubernetes."""
    api = services()["api"]
    assert "0.0.0.0" in command_of(api)
    assert required_var(env_of(api).get("PLATEAU_ADMIN_KEY", ""), "PLATEAU_ADMIN_KEY")

    spec = pod_spec(one("Deployment", "plateau-api"))
    (c,) = spec["containers"]
    assert "0.0.0.0" in c["command"]
    env = env_with_configmaps(c)
    assert "PLATEAU_ADMIN_KEY" not in env, "a file, not a variable more tools display"
    path = env["PLATEAU_ADMIN_KEY_FILE"]
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount.get("readOnly") is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    secret = volume["secret"]
    assert secret["secretName"] == "plateau-secrets"
    items = {i["path"]: i["key"] for i in secret["items"]}
    assert items[path[len(mount["mountPath"]) + 1 :]] == "PLATEAU_ADMIN_KEY"
    # readable by the API's user and nobody else: group-readable with fsGroup = its group
    context = spec["securityContext"]
    mode = secret.get("defaultMode", 0o644)
    assert mode & 0o004 == 0, "the key file must not be world-readable"
    assert mode & 0o040 and context["fsGroup"] == context["runAsGroup"]


def test_no_deployment_turns_auth_off_or_ships_a_key():
    for name, svc in services().items():
        env = env_of(svc)
        assert env.get("PLATEAU_AUTH", "auto") != "off", name
        for key in ("PLATEAU_ADMIN_KEY", "PLATEAU_API_KEY"):
            if key in env:
                assert required_var(env[key], key), f"{name}.{key} must be a required variable"
    for name, c in k8s_containers():
        env = env_with_configmaps(c)
        assert env.get("PLATEAU_AUTH", "auto") != "off", name
        for key in ("PLATEAU_ADMIN_KEY", "PLATEAU_API_KEY"):
            if key in env:
                assert secret_ref(env[key]) is not None, f"{name}: {key} must come from a Secret"
    for word, rest in dockerfile_instructions():
        if word in ("ENV", "ARG"):
            assert "PLATEAU_ADMIN_KEY" not in rest and "PLATEAU_API_KEY" not in rest, rest
            assert not re.search(r"PLATEAU_AUTH\W+off", rest), rest
    # the image's default command binds 0.0.0.0; its comment says what it then needs
    assert "PLATEAU_ADMIN_KEY" in DOCKERFILE.read_text().split("CMD [")[-2]
