"""The Kubernetes manifests (deploy/) and the image (Dockerfile) against the code they run.

Every overlay is rendered with `kubectl kustomize` and each object validated
offline against the Kubernetes schemas (kubernetes-validate, strict: an
unknown field fails). Then the manifests are held to the code: every QUIVER_*
variable is one the role's command reads, and parses; probes, ports, Services
and NetworkPolicies agree with what the containers listen on; the
coordinator's shard list names exactly the StatefulSet's pods. Last, the dev
overlay's containers run as local processes (loopback, tmp dirs) and serve a
collection end to end, so the manifests and the code cannot drift apart.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import secrets
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from tls_util import self_signed

yaml = pytest.importorskip("yaml", reason="PyYAML reads the rendered manifests (a test extra)")

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
OVERLAYS = sorted(p.parent.name for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
#: The newest Kubernetes release kubernetes-validate 1.37 ships schemas for.
KUBERNETES_VERSION = "1.37.0"

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl is not on PATH: cannot render deploy/overlays "
                                          "(`kubectl kustomize`)")


# ------------------------------------------------------------------ reading

@functools.lru_cache(maxsize=None)
def _rendered_text(overlay: str) -> str:
    r = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "overlays" / overlay)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, f"`kubectl kustomize deploy/overlays/{overlay}` failed:\n{r.stderr}"
    return r.stdout


def render(overlay: str) -> list[dict]:
    """The overlay's objects, freshly parsed (callers may change them)."""
    return [o for o in yaml.safe_load_all(_rendered_text(overlay)) if o]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def workloads(objs: list[dict], image: str = "quiver") -> list[tuple[dict, dict]]:
    """(workload, container) for each container of each Deployment and StatefulSet running
    ``image`` (Quiver's own; etcd's containers are checked apart)."""
    return [(w, c) for w in objs if w["kind"] in ("Deployment", "StatefulSet")
            for c in w["spec"]["template"]["spec"]["containers"] if c["image"].split(":")[0].endswith(image)]


def who(w: dict, c: dict) -> str:
    return f"{w['kind']}/{w['metadata']['name']} container {c['name']}"


def container_env(objs: list[dict], c: dict) -> dict[str, str]:
    """The environment Kubernetes gives the container: its envFrom ConfigMaps, then its env."""
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        assert set(src) <= {"configMapRef", "prefix"}, f"envFrom other than a ConfigMap: {src}"
        env.update({src.get("prefix", "") + k: v for k, v in configmaps[src["configMapRef"]["name"]].items()})
    for e in c.get("env", []):
        assert "value" in e, f"env {e['name']} is not a plain value: {e}"
        env[e["name"]] = e["value"]
    return env


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------ the image

def _final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) of the Dockerfile's last stage, continuation lines joined."""
    out, cur = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        word, _, rest = (cur + s).partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    last_from = max(i for i, (w, _) in enumerate(out) if w == "FROM")
    return out[last_from:]


def image_entrypoint() -> list[str]:
    return json.loads(next(rest for w, rest in _final_stage() if w == "ENTRYPOINT"))


def image_env() -> dict[str, str]:
    env = {}
    for w, rest in _final_stage():
        if w == "ENV":
            env.update(tok.split("=", 1) for tok in shlex.split(rest))
    return env


# ------------------------------------------------------------------ the code

def cli_command(role: str):
    from quiver.cli import main

    assert role in main.commands, f"`quiver {role}` is not a command (have {sorted(main.commands)})"
    return main.commands[role]


def envvars_read(role: str) -> set[str]:
    names: set[str] = set()
    for p in cli_command(role).params:
        names.update([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])
    return names


def role_of(w: dict, c: dict) -> str:
    """The container's `quiver` subcommand; settings belong in the ConfigMaps, not in args."""
    command = c.get("command") or image_entrypoint()
    assert command == ["quiver"], f"{who(w, c)} runs {command}, not the `quiver` command"
    args = c.get("args", [])
    assert len(args) == 1, f"{who(w, c)}: args {args}; put settings in the ConfigMaps as QUIVER_* variables"
    return args[0]


def parse_cli(role: str, env: dict[str, str]) -> dict:
    """The role's parameters as `quiver <role>` parses them from exactly ``env`` (types, required ones)."""
    import click

    with mock.patch.dict(os.environ):
        for k in [k for k in os.environ if k.startswith("QUIVER_")]:
            del os.environ[k]
        os.environ.update(env)
        try:
            return cli_command(role).make_context(role, []).params
        except click.ClickException as e:
            pytest.fail(f"`quiver {role}` rejects the manifests' environment: {e.format_message()}")


def listen_port(params: dict) -> int:
    host, _, port = params["listen"].rpartition(":")
    assert host in ("0.0.0.0", "[::]"), f"listen on {params['listen']}: the pod IP must be reachable"
    return int(port)


# ------------------------------------------------------------------ tests: rendering and schemas

@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_cluster(overlay):
    objs = render(overlay)
    ns = one(objs, "Namespace")["metadata"]["name"]
    assert all(o["metadata"].get("namespace") == ns for o in objs if o["kind"] != "Namespace")
    for kind, name in [("StatefulSet", "quiver-shard"), ("Service", "quiver-shard"),
                       ("PodDisruptionBudget", "quiver-shard"), ("NetworkPolicy", "quiver-shard"),
                       ("Deployment", "quiver-coordinator"), ("Service", "quiver-coordinator"),
                       ("NetworkPolicy", "quiver-coordinator")]:
        one(objs, kind, name)
    coord = one(objs, "Deployment")
    env = container_env(objs, coord["spec"]["template"]["spec"]["containers"][0])
    if env.get("QUIVER_ETCD_ENDPOINTS"):
        # metadata in etcd: several stateless coordinators, rolling updates, no PVC
        assert coord["spec"]["replicas"] >= 3 and coord["spec"]["strategy"]["type"] == "RollingUpdate"
        assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
        for kind in ("StatefulSet", "Service", "PodDisruptionBudget", "NetworkPolicy"):
            one(objs, kind, "quiver-etcd")
        one(objs, "PodDisruptionBudget", "quiver-coordinator")
    else:
        # embedded metadata: one coordinator, its LMDB on a ReadWriteOnce PVC, the
        # old pod gone before the new one opens it
        assert coord["spec"]["replicas"] == 1 and coord["spec"]["strategy"]["type"] == "Recreate"
        one(objs, "PersistentVolumeClaim", "quiver-coordinator")
    assert one(objs, "StatefulSet", "quiver-shard")["spec"]["podManagementPolicy"] == "Parallel"


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (a test extra)")
    from kubernetes_validate.utils import all_versions

    assert KUBERNETES_VERSION in all_versions(), \
        f"kubernetes-validate {kv.__version__} has no schemas for Kubernetes {KUBERNETES_VERSION}"
    errors = []
    for obj in render(overlay):
        try:
            used = kv.validate(obj, KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as e:
            where = ".".join(map(str, e.absolute_path))
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} {where}: {e.message}")
        else:
            assert used == KUBERNETES_VERSION.rsplit(".", 1)[0]
    assert not errors, "\n".join(errors)


# ------------------------------------------------------------------ tests: manifests vs code

def test_image_runs_the_quiver_command():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert image_entrypoint() == ["quiver"] and scripts["quiver"] == "quiver.cli:main"
    cmd = json.loads(next(rest for w, rest in _final_stage() if w == "CMD"))
    cli_command(cmd[0])
    user = next(rest for w, rest in _final_stage() if w == "USER")
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0", "USER must be a numeric non-root uid"
    env = image_env()
    assert env["OPENBLAS_NUM_THREADS"] == "1" and env["NUMBA_CACHE_DIR"].startswith("/")
    unread = {k for k in env if k.startswith("QUIVER_")} - (envvars_read("shard-node") & envvars_read("coordinator"))
    assert not unread, f"the image sets {sorted(unread)}, which not both roles read"


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_is_read_and_parsed_by_the_code(overlay):
    objs = render(overlay)
    for w, c in workloads(objs):
        role = role_of(w, c)
        env = container_env(objs, c)
        unread = set(env) - envvars_read(role)
        assert not unread, f"{who(w, c)} sets {sorted(unread)}, which `quiver {role}` does not read"
        parse_cli(role, env)
    referenced = {src["configMapRef"]["name"] for _, c in workloads(objs) for src in c.get("envFrom", [])}
    assert referenced == {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}, "unused ConfigMap"


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ports_and_volumes_match_what_the_containers_do(overlay):
    objs = render(overlay)
    image_user = int(next(rest for w, rest in _final_stage() if w == "USER").split(":")[0])
    for w, c in workloads(objs):
        role = role_of(w, c)
        params = parse_cli(role, container_env(objs, c))
        port, metrics = listen_port(params), params["metrics_port"]
        pod = w["spec"]["template"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        health = params.get("health_port")
        assert ports == {"grpc": port, "metrics": metrics, **({"health": health} if health else {})}, who(w, c)
        if params.get("tls_cert"):  # the kubelet's gRPC probes cannot speak TLS: the plaintext health port
            assert health, f"{who(w, c)} serves TLS without QUIVER_HEALTH_PORT for its probes"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == (health or port) and c[probe]["grpc"].get("service", "") == "", \
                (who(w, c), probe)
        ann = pod["metadata"]["annotations"]
        assert (ann["prometheus.io/scrape"], ann["prometheus.io/port"], ann["prometheus.io/path"]) == \
            ("true", str(metrics), "/metrics"), who(w, c)
        assert pod["spec"]["terminationGracePeriodSeconds"] > params["grace"], \
            f"{who(w, c)}: the kubelet's SIGKILL would cut the {params['grace']} s drain"
        assert pod["spec"]["securityContext"]["runAsUser"] == image_user

        # every mount names exactly one volume of the pod (or a claim template), names are
        # unique, and a volume's PVC is one the overlay makes: a patch that replaced a
        # volume by its index once left the prod coordinator two "data" volumes and none
        # for its cluster secret
        volumes = [v["name"] for v in pod["spec"].get("volumes", [])]
        templates = [t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])]
        assert len(set(volumes + templates)) == len(volumes + templates), (who(w, c), volumes, templates)
        missing = [m["name"] for m in c["volumeMounts"] if m["name"] not in volumes + templates]
        assert not missing, f"{who(w, c)} mounts volumes the pod does not have: {missing}"
        pvcs = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
        for v in pod["spec"].get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in pvcs, (who(w, c), v)
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])} | {
            v["name"] for v in pod["spec"].get("volumes", []) if "persistentVolumeClaim" in v}
        if role == "shard-node" or not params.get("etcd_endpoints"):  # a coordinator over etcd keeps nothing
            assert mounts.get(params["data_dir"]) in claims, f"{who(w, c)}: {params['data_dir']} is not on a PVC"
        if c["securityContext"].get("readOnlyRootFilesystem"):
            cache = image_env()["NUMBA_CACHE_DIR"]
            assert any(cache == m or cache.startswith(m.rstrip("/") + "/") for m in mounts), \
                f"{who(w, c)}: NUMBA_CACHE_DIR {cache} is on the read-only root filesystem"

        labels = pod["metadata"]["labels"]
        for svc in [s for s in objs if s["kind"] == "Service" and selects(s["spec"]["selector"], labels)]:
            for sp in svc["spec"]["ports"]:
                assert ports.get(sp["targetPort"]) == sp["port"], (svc["metadata"]["name"], sp)
        for pol in [p for p in objs if p["kind"] == "NetworkPolicy" and
                    selects(p["spec"]["podSelector"]["matchLabels"], labels)]:
            for rule in pol["spec"]["ingress"]:
                assert all(p["port"] in ports or p["port"] in ports.values() for p in rule["ports"]), \
                    (pol["metadata"]["name"], rule)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_coordinators_reach_shard_node_grpc(overlay):
    objs = render(overlay)
    shard_labels = one(objs, "StatefulSet", "quiver-shard")["spec"]["template"]["metadata"]["labels"]
    coord_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    policies = [p for p in objs if p["kind"] == "NetworkPolicy" and
                selects(p["spec"]["podSelector"]["matchLabels"], shard_labels)]
    assert policies and all("Ingress" in p["spec"]["policyTypes"] for p in policies)
    grpc_rules = [r for p in policies for r in p["spec"]["ingress"]
                  if any(port["port"] == "grpc" for port in r.get("ports", [{"port": "grpc"}]))]
    assert grpc_rules
    for r in grpc_rules:
        assert r.get("from") and all(set(peer) == {"podSelector"} and
                                     selects(peer["podSelector"]["matchLabels"], coord_labels)
                                     for peer in r["from"]), r


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_coordinator_lists_exactly_the_statefulset_pods(overlay):
    objs = render(overlay)
    ns = one(objs, "Namespace")["metadata"]["name"]
    sts = one(objs, "StatefulSet", "quiver-shard")
    svc = one(objs, "Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None", "per-pod DNS names need a headless Service"
    assert selects(svc["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
    (sw, sc), = [(w, c) for w, c in workloads(objs) if w is sts]
    port = listen_port(parse_cli(role_of(sw, sc), container_env(objs, sc)))
    name, svc_name = sts["metadata"]["name"], svc["metadata"]["name"]
    want = [f"{name}-{i}.{svc_name}.{ns}.svc:{port}" for i in range(sts["spec"]["replicas"])]
    (cw, cc), = [(w, c) for w, c in workloads(objs) if w["kind"] == "Deployment"]
    assert role_of(cw, cc) == "coordinator"
    assert parse_cli("coordinator", container_env(objs, cc))["shard_nodes"].split(",") == want


@needs_kubectl
def test_prod_requires_shard_nodes_on_distinct_machines():
    spec = one(render("prod"), "StatefulSet", "quiver-shard")["spec"]["template"]["spec"]
    terms = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert [t["topologyKey"] for t in terms] == ["kubernetes.io/hostname"]


# ------------------------------------------------------------------ etcd (the prod overlay)

def _expand(value: str, variables: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in env values."""
    return re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), value)


def etcd_member_env(c: dict, pod: str) -> dict[str, str]:
    """The ETCD_* environment of one member pod, as the kubelet expands it."""
    env = {}
    for e in c["env"]:
        if "valueFrom" in e:
            assert e["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}} and e["name"] == "POD_NAME", e
            continue
        env[e["name"]] = _expand(e["value"], {"POD_NAME": pod})
    return env


def etcd_overlays() -> list[str]:
    return [o for o in OVERLAYS if shutil.which("kubectl") and
            any(w["metadata"]["name"] == "quiver-etcd" for w, _ in workloads(render(o), "etcd"))]


@needs_kubectl
def test_prod_runs_three_coordinators_over_a_three_member_etcd():
    assert "prod" in etcd_overlays()
    objs = render("prod")
    assert one(objs, "Deployment", "quiver-coordinator")["spec"]["replicas"] == 3


@needs_kubectl
@pytest.mark.parametrize("overlay", etcd_overlays() or ["prod"])
def test_etcd_members_flags_and_endpoints_agree(overlay):
    objs = render(overlay)
    ns = one(objs, "Namespace")["metadata"]["name"]
    sts = one(objs, "StatefulSet", "quiver-etcd")
    svc = one(objs, "Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"].get("publishNotReadyAddresses") is True
    (w, c), = workloads(objs, "etcd")
    n = sts["spec"]["replicas"]
    assert n >= 3 and n % 2 == 1, "an odd number of members, at least 3, keeps a quorum through one loss"
    pods = [f"{sts['metadata']['name']}-{i}" for i in range(n)]
    peers = {p: f"https://{p}.{svc['metadata']['name']}.{ns}.svc:2380" for p in pods}  # members speak TLS
    for pod in pods:
        env = etcd_member_env(c, pod)
        assert env["ETCD_NAME"] == pod
        assert dict(m.split("=", 1) for m in env["ETCD_INITIAL_CLUSTER"].split(",")) == peers
        assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == peers[pod]
    if shutil.which("etcd"):  # every variable is a flag etcd knows (it reads ETCD_X_Y as --x-y)
        help_text = subprocess.run(["etcd", "--help"], capture_output=True, text=True, timeout=30)
        flags = help_text.stdout + help_text.stderr
        unknown = [k for k in etcd_member_env(c, pods[0]) if f"--{k[5:].lower().replace('_', '-')}" not in flags]
        assert not unknown, f"etcd has no flags for {unknown}"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"client": 2379, "peer": 2380, "metrics": 2381}
    env = etcd_member_env(c, pods[0])
    assert env["ETCD_LISTEN_CLIENT_URLS"].startswith("https://") and env["ETCD_CLIENT_CERT_AUTH"] == "true"
    assert env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true" and env["ETCD_LISTEN_METRICS_URLS"] == "http://0.0.0.0:2381"
    assert {c[p]["httpGet"]["port"] for p in ("readinessProbe", "livenessProbe")} == {"metrics"}
    (cw, cc), = [(w, c) for w, c in workloads(objs) if w["kind"] == "Deployment"]
    endpoints = parse_cli("coordinator", container_env(objs, cc))["etcd_endpoints"].split(",")
    assert endpoints == [f"{p}.{svc['metadata']['name']}.{ns}.svc:{ports['client']}" for p in pods]
    pol = one(objs, "NetworkPolicy", "quiver-etcd")
    coord_labels = cw["spec"]["template"]["metadata"]["labels"]
    client_rules = [r for r in pol["spec"]["ingress"] if any(p["port"] == "client" for p in r["ports"])]
    assert client_rules and all(selects(peer["podSelector"]["matchLabels"], coord_labels)
                                for r in client_rules for peer in r["from"])


# ------------------------------------------------------------------ test: an overlay, run

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_runs_as_local_processes(overlay, tmp_path):
    """Each container's command, args and environment, started here: loopback addresses,
    tmp data dirs, and the pods' DNS names (shard nodes, etcd members) replaced by the
    local processes' addresses. Every replica runs (three coordinators and three etcd
    members for prod). Nothing else changes."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from quiver.client import Client
    from quiver.local import child_env, wait_port_file
    from shard.errors import Unauthenticated

    objs = render(overlay)
    ns = one(objs, "Namespace")["metadata"]["name"]
    base_env = {k: v for k, v in child_env().items() if not k.startswith("QUIVER_")}
    # the Secrets the manifests mount, as files here (the same paths under tmp_path/etc)
    admin_key = secrets.token_hex(16)
    etc = tmp_path / "etc"
    for d in ("cluster", "api-keys", "tls", "shard-tls", "coordinator-tls", "etcd-tls", "etcd-server"):
        (etc / d).mkdir(parents=True)
    (etc / "cluster" / "secret").write_text(secrets.token_hex(32) + "\n")
    (etc / "api-keys" / "keys.txt").write_text(f"{admin_key} admin\n")
    cert, _ = self_signed(etc / "tls")
    # the shard nodes' Secret: one certificate for the name the coordinator checks, and the
    # coordinator's client certificate (mutual TLS), each its own CA: ca.crt trusts both
    (_, coord), = [(w, c) for w, c in workloads(objs) if w["kind"] == "Deployment"]
    node_name = container_env(objs, coord).get("QUIVER_SHARD_TLS_SERVER_NAME", "localhost")
    node_cert, _ = self_signed(etc / "shard-tls", f"DNS:{node_name}")
    client_cert, _ = self_signed(etc / "coordinator-tls", "DNS:quiver-coordinator")
    (etc / "shard-tls" / "ca.crt").write_bytes(node_cert.read_bytes() + client_cert.read_bytes())
    # etcd's Secrets (prod): the members' certificate (here for 127.0.0.1, where they listen),
    # trusted by the coordinators; the coordinators' client certificate, trusted by etcd
    etcd_cert, _ = self_signed(etc / "etcd-server", "DNS:*.quiver-etcd.quiver.svc,IP:127.0.0.1")
    etcd_client, _ = self_signed(etc / "etcd-tls", "DNS:quiver-coordinator")
    (etc / "etcd-server" / "ca.crt").write_bytes(etcd_cert.read_bytes() + etcd_client.read_bytes())
    shutil.copy(etcd_cert, etc / "etcd-tls" / "ca.crt")
    procs: dict[str, tuple[subprocess.Popen, Path, dict]] = {}  # pod name -> (process, log, container)
    etcds: list[subprocess.Popen] = []
    dns: dict[str, str] = {}  # a pod's "name.service.namespace.svc:port" -> the local "127.0.0.1:port"

    def start(pod: str, w: dict, c: dict, **rewrite: str) -> None:
        role_of(w, c)  # command == ["quiver"], args == [role]
        env = container_env(objs, c)
        for k, v in env.items():
            if v.startswith("/etc/quiver/"):  # a mounted Secret: it must be mounted, and here it is a file
                assert any(v.startswith(m["mountPath"] + "/") for m in c.get("volumeMounts", [])), (pod, k, v)
                env[k] = str(etc / v[len("/etc/quiver/"):])
        env.update(QUIVER_LISTEN="127.0.0.1:0", QUIVER_DATA_DIR=str(tmp_path / pod),
                   QUIVER_PORT_FILE=str(tmp_path / f"{pod}.port"), **rewrite)
        for k in ("QUIVER_METRICS_PORT", "QUIVER_HEALTH_PORT"):
            if k in env:
                env[k] = "0"
        log = tmp_path / f"{pod}.log"
        with open(log, "wb") as out:
            p = subprocess.Popen([sys.executable, "-m", "quiver.cli", *c["args"]], env={**base_env, **env},
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=str(REPO))
        procs[pod] = (p, log, c)

    def local(entries: str) -> str:
        out = []
        for entry in entries.split(","):
            assert entry in dns, f"{entry} names no pod of the overlay"
            out.append(dns[entry])
        return ",".join(out)

    try:
        for w, c in workloads(objs, "etcd"):  # the etcd members first, from their own environment
            binary = shutil.which("etcd")
            if binary is None:
                pytest.skip("no etcd binary (./run test installs it through scripts/ensure-etcd)")
            assert c["command"] == ["etcd"]
            svc = w["spec"]["serviceName"]
            pods = [f"{w['metadata']['name']}-{i}" for i in range(w["spec"]["replicas"])]
            ports = {p: (_free_port(), _free_port(), _free_port()) for p in pods}
            for p, (cp, pp, _) in ports.items():
                dns[f"{p}.{svc}.{ns}.svc:2379"], dns[f"{p}.{svc}.{ns}.svc:2380"] = f"127.0.0.1:{cp}", f"127.0.0.1:{pp}"
            for p in pods:
                env = etcd_member_env(c, p)
                cp, pp, mp = ports[p]
                for k, v in env.items():
                    v = v.replace("0.0.0.0:2379", f"127.0.0.1:{cp}").replace("0.0.0.0:2380", f"127.0.0.1:{pp}")
                    v = v.replace("0.0.0.0:2381", f"127.0.0.1:{mp}")
                    for name, addr in dns.items():
                        v = v.replace(name, addr)
                    if v.startswith("/etc/etcd/tls/"):  # its mounted Secret, here files
                        assert any(v.startswith(m["mountPath"] + "/") for m in c["volumeMounts"]), (p, k, v)
                        v = str(etc / "etcd-server" / v[len("/etc/etcd/tls/"):])
                    env[k] = v
                env["ETCD_DATA_DIR"] = str(tmp_path / p)
                with open(tmp_path / f"{p}.log", "wb") as out:
                    etcds.append(subprocess.Popen([binary], env={**base_env, **env}, stdin=subprocess.DEVNULL,
                                                  stdout=out, stderr=out))
            deadline = time.monotonic() + 60
            for p in pods:
                while True:
                    try:
                        probe = c["readinessProbe"]["httpGet"]
                        port = ports[p][("client", "peer", "metrics").index(probe["port"])]
                        url = f"http://127.0.0.1:{port}{probe['path']}"
                        if json.loads(urllib.request.urlopen(url, timeout=2).read()).get("health") == "true":
                            break
                    except OSError:
                        pass
                    assert time.monotonic() < deadline, f"etcd member {p} not healthy after 60 s"
                    time.sleep(0.2)

        sts = one(objs, "StatefulSet", "quiver-shard")
        (sw, sc), = [(w, c) for w, c in workloads(objs) if w is sts]
        for i in range(sts["spec"]["replicas"]):
            start(f"{sts['metadata']['name']}-{i}", sw, sc)
        info = {pod: wait_port_file(tmp_path / f"{pod}.port", p, timeout=120, log_file=log)
                for pod, (p, log, _) in procs.items()}
        for pod in info:
            dns[f"{pod}.{sts['spec']['serviceName']}.{ns}.svc:{sc['ports'][0]['containerPort']}"] = \
                f"127.0.0.1:{info[pod]['port']}"

        (cw, cc), = [(w, c) for w, c in workloads(objs) if w["kind"] == "Deployment"]
        cenv = container_env(objs, cc)
        rewrite = {"QUIVER_SHARD_NODES": local(cenv["QUIVER_SHARD_NODES"])}
        if cenv.get("QUIVER_ETCD_ENDPOINTS"):
            rewrite["QUIVER_ETCD_ENDPOINTS"] = local(cenv["QUIVER_ETCD_ENDPOINTS"])
        coordinators = [f"coordinator-{i}" for i in range(cw["spec"]["replicas"])]
        for pod in coordinators:
            start(pod, cw, cc, **rewrite)
        for pod in coordinators:
            p, log, _ = procs[pod]
            info[pod] = wait_port_file(tmp_path / f"{pod}.port", p, timeout=120, log_file=log)

        for pod, (_, _, c) in procs.items():  # what the kubelet's probe asks, and Prometheus' scrape
            assert info[pod]["metrics_port"], f"{pod}: no metrics endpoint; QUIVER_METRICS_PORT not honoured"
            probe_port = info[pod].get("health_port") or info[pod]["port"]
            with grpc.insecure_channel(f"127.0.0.1:{probe_port}") as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=c["readinessProbe"]["grpc"].get("service", "")),
                    timeout=20)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING, pod

        rng = np.random.default_rng(5)
        x = rng.standard_normal((64, 24)).astype(np.float32)
        addrs = [f"127.0.0.1:{info[pod]['port']}" for pod in coordinators]
        tls = {"tls": True, "ca_cert": cert}  # the manifests serve the public API over TLS
        with Client(addrs[0], timeout=60, api_key=admin_key, **tls) as client:
            client.create_collection("deployed", 24, "cosine", quantization="scalar", shard_number=0)
            client.upsert("deployed", np.arange(64, dtype=np.uint64), x, [{"i": i} for i in range(64)])
        with Client(addrs[-1], timeout=60, api_key=admin_key, **tls) as other:  # another coordinator, if any
            deadline = time.monotonic() + 10
            while "deployed" not in other.list_collections():
                assert time.monotonic() < deadline, "the last coordinator never saw the collection"
                time.sleep(0.05)
            assert other.count("deployed") == 64
            hits = other.search("deployed", x[7], limit=3, with_payload=True)
        assert hits.ids[0] == 7 and hits.payloads[0] == {"i": 7}
        with Client(addrs[0], timeout=30, **tls) as anonymous:
            with pytest.raises(Unauthenticated):  # the manifests turn API keys on
                anonymous.count("deployed")
        assert hits.shards_answered == hits.shards_total == sts["spec"]["replicas"]
        for pod in procs:
            url = f"http://127.0.0.1:{info[pod]['metrics_port']}/metrics"
            assert "quiver_requests_total" in urllib.request.urlopen(url, timeout=10).read().decode(), pod
    finally:
        for p, _, _ in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = {}
        for pod, (p, _, _) in procs.items():
            try:
                codes[pod] = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[pod] = p.wait()
        for e in etcds:
            e.terminate()
            try:
                e.wait(timeout=10)
            except subprocess.TimeoutExpired:
                e.kill()
                e.wait()
    for pod, (_, log, _) in procs.items():  # a graceful stop: drained, LMDB closed, exit 0
        records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        assert codes[pod] == 0 and records and records[-1]["msg"] == "stopped", \
            f"{pod} exited {codes[pod]}:\n{log.read_text()[-2000:]}"
