"""The container tier's launcher: the chart decides how the container runs, docker runs it.

`render(image, values)` runs `helm template` on `charts/tgi-csd` and reads the Deployment's container spec,
the cascade ConfigMap, the Service, the ServiceMonitor and the `helm test` pod. `ContainerSpec.docker_args`
turns the container spec into `docker run` options, one Kubernetes field to one docker option:

| Kubernetes (rendered)                            | docker run                                        |
|--------------------------------------------------|---------------------------------------------------|
| args, env (value only)                           | the image's entrypoint + args, --env              |
| workingDir                                       | --workdir                                         |
| runAsUser / runAsGroup, fsGroup                  | --user UID:GID, --group-add GID (volume ownership) |
| readOnlyRootFilesystem                           | --read-only                                       |
| capabilities.drop ALL                            | --cap-drop ALL                                    |
| allowPrivilegeEscalation false                   | --security-opt no-new-privileges                  |
| seccompProfile RuntimeDefault                    | docker's default seccomp profile                  |
| emptyDir medium Memory at /dev/shm, sizeLimit    | --shm-size                                        |
| emptyDir                                         | a tmpfs mount (mode 1777)                         |
| persistentVolumeClaim (model cache)              | a bind mount of a folder owned by fsGroup         |
| configMap volume (readOnly)                      | its files in a folder, bind-mounted read-only     |
| containerPort (named)                            | published on a free 127.0.0.1 port                |
| resources.limits cpu / memory                    | --cpus / --memory                                 |
| terminationGracePeriodSeconds                    | docker stop --time                                |
| limits nvidia.com/gpu                            | --gpus N                                          |

A field the table does not cover (envFrom, valueFrom, command, another volume type) is refused
with its name, so the container never runs on settings the chart does not state.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "tgi-csd"
CPU_VALUES = CHART / "ci" / "cpu-values.yaml"
RELEASE = "tgi"


def helm_binary() -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from chart_tools import helm

    return helm("helm4")


def render(image: str, values: Path = CPU_VALUES) -> dict[str, list[dict]]:
    """The chart's manifests for `values` with `image` (`repo:tag`), by kind."""
    repository, tag = image.rsplit(":", 1)
    home = Path(tempfile.mkdtemp(prefix="tgi-csd-helm-"))
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    extra = home / "image.yaml"
    extra.write_text(yaml.safe_dump({"image": {"repository": repository, "tag": tag}}))
    try:
        out = subprocess.run([str(helm_binary()), "template", RELEASE, str(CHART), "-f", str(values), "-f",
                              str(extra)], capture_output=True, text=True, env=env, timeout=120)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if out.returncode:
        raise RuntimeError(f"helm template failed:\n{out.stderr}")
    kinds: dict[str, list[dict]] = {}
    for document in yaml.safe_load_all(out.stdout):
        if document:
            kinds.setdefault(document["kind"], []).append(document)
    return kinds


def quantity_bytes(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if str(value).endswith(suffix):
            return int(float(str(value)[: -len(suffix)]) * factor)
    return int(value)


def cpus(value: str) -> float:
    return float(value[:-1]) / 1000 if str(value).endswith("m") else float(value)


@dataclass
class Probe:
    kind: str
    path: str
    port: str
    period: int
    timeout: int
    failures: int


@dataclass
class ContainerSpec:
    """One rendered Deployment's container, the pod's security settings and volumes, and the objects around
    it (cascade ConfigMap data, Service, ServiceMonitor, `helm test` pod)."""

    name: str
    image: str
    args: list[str]
    working_dir: str | None
    env: dict[str, str]
    user: int
    group: int
    fs_group: int | None
    read_only_root: bool
    cap_drop: list[str]
    no_new_privileges: bool
    seccomp: str
    ports: dict[str, int]
    probes: list[Probe]
    cpu_limit: float | None
    memory_limit: int | None
    grace_seconds: int
    shm_bytes: int | None = None
    tmpfs: list[str] = field(default_factory=list)
    claims: dict[str, str] = field(default_factory=dict)  # mountPath -> claim name
    config_files: dict[str, dict[str, str]] = field(default_factory=dict)  # mountPath -> {file: text}
    monitored_ports: list[str] = field(default_factory=list)  # the ServiceMonitor's endpoint port names
    service: dict = field(default_factory=dict)
    test_pod: dict = field(default_factory=dict)
    gpus: int = 0

    @classmethod
    def from_manifests(cls, kinds: dict[str, list[dict]]) -> ContainerSpec:
        [deployment] = kinds["Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        pod_security, security = pod.get("securityContext", {}), container.get("securityContext", {})
        refused = [key for key in ("envFrom", "command") if container.get(key)]
        env = {}
        for item in container.get("env", []):
            if "value" not in item:
                refused.append(f"env {item['name']} (valueFrom)")
            env[item["name"]] = item.get("value", "")
        maps = {m["metadata"]["name"]: m.get("data", {}) for m in kinds.get("ConfigMap", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        spec = cls(
            name=deployment["metadata"]["name"], image=container["image"], args=list(container.get("args", [])),
            working_dir=container.get("workingDir"),
            env=env, user=security.get("runAsUser", pod_security.get("runAsUser", 0)),
            group=security.get("runAsGroup", pod_security.get("runAsGroup", 0)), fs_group=pod_security.get("fsGroup"),
            read_only_root=bool(security.get("readOnlyRootFilesystem")),
            cap_drop=list(security.get("capabilities", {}).get("drop", [])),
            no_new_privileges=security.get("allowPrivilegeEscalation") is False,
            seccomp=security.get("seccompProfile", pod_security.get("seccompProfile", {})).get("type", "Unconfined"),
            ports={p["name"]: p["containerPort"] for p in container.get("ports", [])},
            probes=[Probe(kind, probe["httpGet"]["path"], probe["httpGet"]["port"], probe.get("periodSeconds", 10),
                          probe.get("timeoutSeconds", 1), probe.get("failureThreshold", 3))
                    for kind in ("startup", "readiness", "liveness")
                    if (probe := container.get(f"{kind}Probe"))],
            cpu_limit=cpus(container["resources"]["limits"]["cpu"]) if container.get("resources", {}).get(
                "limits", {}).get("cpu") else None,
            memory_limit=quantity_bytes(container["resources"]["limits"]["memory"]) if container.get(
                "resources", {}).get("limits", {}).get("memory") else None,
            grace_seconds=pod.get("terminationGracePeriodSeconds", 30),
            gpus=int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)),
        )
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            path = mount["mountPath"]
            if "emptyDir" in volume and (volume["emptyDir"] or {}).get("medium") == "Memory" and path == "/dev/shm":
                spec.shm_bytes = quantity_bytes(volume["emptyDir"].get("sizeLimit", "64Mi"))
            elif "emptyDir" in volume:
                spec.tmpfs.append(path)
            elif "persistentVolumeClaim" in volume:
                spec.claims[path] = volume["persistentVolumeClaim"]["claimName"]
            elif "configMap" in volume and mount.get("readOnly"):
                spec.config_files[path] = maps[volume["configMap"]["name"]]
            else:
                refused.append(f"volume {mount['name']} ({', '.join(k for k in volume if k != 'name')})")
        if refused:
            raise RuntimeError(f"the rendered container uses settings the docker launcher cannot apply: {refused}")
        for monitor in kinds.get("ServiceMonitor", []):
            spec.monitored_ports += [e["port"] for e in monitor["spec"]["endpoints"]]
        spec.service = (kinds.get("Service") or [{}])[0]
        spec.test_pod = next((p for p in kinds.get("Pod", [])
                              if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"), {})
        return spec

    def table(self) -> str:
        """The run settings as a printed table (Kubernetes field | value | docker option)."""
        rows = [("image", self.image, "IMAGE"),
                *((f"args[{i}]", arg, "launcher argument") for i, arg in enumerate(self.args)),
                ("workingDir", str(self.working_dir), "--workdir"),
                *((f"env {k}", v, "--env") for k, v in self.env.items()),
                ("runAsUser:runAsGroup", f"{self.user}:{self.group}", "--user"),
                ("fsGroup", str(self.fs_group), "--group-add, volume owner"),
                ("readOnlyRootFilesystem", str(self.read_only_root), "--read-only"),
                ("capabilities.drop", ",".join(self.cap_drop), "--cap-drop"),
                ("allowPrivilegeEscalation", str(not self.no_new_privileges).lower(), "no-new-privileges"),
                ("seccompProfile", self.seccomp, "default profile"),
                ("/dev/shm emptyDir (Memory)", f"{self.shm_bytes} bytes", "--shm-size"),
                *((f"emptyDir {p}", "writable", "tmpfs") for p in self.tmpfs),
                *((f"PVC {p}", claim, "bind mount") for p, claim in self.claims.items()),
                *((f"ConfigMap {p}", ",".join(files), "read-only bind") for p, files in self.config_files.items()),
                *((f"port {n}", str(p), "-p 127.0.0.1::PORT") for n, p in self.ports.items()),
                *((f"{p.kind}Probe", f"GET {p.path} on {p.port} every {p.period}s, timeout {p.timeout}s, "
                   f"{p.failures} failures", "polled by the suite") for p in self.probes),
                ("limits cpu / memory", f"{self.cpu_limit} / {self.memory_limit}", "--cpus / --memory"),
                ("terminationGracePeriodSeconds", str(self.grace_seconds), "docker stop --time"),
                ("ServiceMonitor endpoints", ",".join(self.monitored_ports), "scraped by the suite")]
        width = [max(len(row[i]) for row in rows) for i in range(2)]
        return "\n".join(f"{a:<{width[0]}} | {b:<{width[1]}} | {c}" for a, b, c in rows)

    def docker_args(self, volumes: dict[str, Path]) -> list[str]:
        """`docker run` options (without the image and args); `volumes` maps each PVC's and ConfigMap's mount
        path to the host folder that stands in for it."""
        args = ["--user", f"{self.user}:{self.group}"] + (["--gpus", str(self.gpus)] if self.gpus else [])
        if self.working_dir:
            args += ["--workdir", self.working_dir]
        if self.fs_group is not None:
            args += ["--group-add", str(self.fs_group)]
        if self.read_only_root:
            args.append("--read-only")
        args += [f"--cap-drop={cap}" for cap in self.cap_drop]
        if self.no_new_privileges:
            args += ["--security-opt", "no-new-privileges"]
        if self.seccomp not in ("RuntimeDefault",):
            raise RuntimeError(f"seccompProfile {self.seccomp}: only RuntimeDefault maps to docker's default")
        if self.shm_bytes:
            args += ["--shm-size", str(self.shm_bytes)]
        for path in self.tmpfs:
            args += ["--mount", f"type=tmpfs,destination={path},tmpfs-mode=1777"]
        for path in [*self.claims, *self.config_files]:
            read_only = ",readonly" if path in self.config_files else ""
            args += ["--mount", f"type=bind,source={volumes[path]},destination={path}{read_only}"]
        for key, value in self.env.items():
            args += ["--env", f"{key}={value}"]
        for port in self.ports.values():
            args += ["-p", f"127.0.0.1::{port}"]
        if self.cpu_limit:
            args += ["--cpus", str(self.cpu_limit)]
        if self.memory_limit:
            args += ["--memory", str(self.memory_limit)]
        return args


@dataclass
class ContainerServer:
    """A started container: the same interface as the live tier's `LiveServer`."""

    container: str
    spec: ContainerSpec
    host_ports: dict[str, int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.host_ports['http']}"

    @property
    def metrics_port(self) -> int:
        return self.host_ports["csd-metrics"]

    def get(self, path: str, port: str = "http", timeout: float = 30) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.host_ports[port]}{path}", timeout=timeout) as response:
            return response.read().decode()

    def status(self, path: str, port: str = "http", timeout: float = 5) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.host_ports[port]}{path}", timeout=timeout) as r:
                return r.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return 0

    def info(self) -> dict:
        return json.loads(self.get("/info"))

    def logs(self) -> str:
        out = subprocess.run(["docker", "logs", self.container], capture_output=True, text=True)
        return out.stdout + out.stderr

    def inspect(self) -> dict:
        out = subprocess.run(["docker", "inspect", self.container], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)[0]


def docker_available() -> str | None:
    """None when a Docker engine answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker command"
    out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    return None if out.returncode == 0 else f"no Docker engine answers ({out.stderr.strip()[:200]})"


def prepare_volumes(spec: ContainerSpec, model: Path, workdir: Path) -> dict[str, Path]:
    """Host folders for the PVCs (the model cache, holding the model where `--model-id` points) and the
    ConfigMaps, owned as the pod's fsGroup would own them."""
    volumes: dict[str, Path] = {}
    owner = spec.fs_group if spec.fs_group is not None else spec.user
    for path in spec.claims:
        folder = workdir / f"pvc{path.replace('/', '-')}"
        if not folder.is_dir():
            folder.mkdir(parents=True)
            model_id = next((a.split("=", 1)[1] for a in spec.args if a.startswith("--model-id=")), "")
            if model_id.startswith(path.rstrip("/") + "/"):
                shutil.copytree(model, folder / model_id[len(path.rstrip("/")) + 1:])
            for item in [folder, *folder.rglob("*")]:
                os.chown(item, spec.user, owner)
        volumes[path] = folder
    for path, files in spec.config_files.items():
        folder = workdir / f"configmap{path.replace('/', '-')}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text)
            (folder / name).chmod(0o644)
        volumes[path] = folder
    return volumes


@contextlib.contextmanager
def run_container(spec: ContainerSpec, volumes: dict[str, Path], name: str, args: list[str] | None = None,
                  log_dir: Path | None = None, network: str | None = None, alias: str | None = None,
                  timeout: float = 900):
    """Start the container (args: the spec's unless given) on docker network `network` (reachable there as
    `alias`, the Service's name), wait until its startup probe's path answers 200 (failing after the probe's
    own budget, or `timeout`), yield a `ContainerServer`; remove it afterwards, keeping its log in `log_dir`."""
    container = f"tgi-csd-{name}-{os.getpid()}-{int(time.time())}"
    networking = (["--network", network] if network else []) + (["--network-alias", alias] if alias else [])
    command = ["docker", "run", "-d", "--name", container, *networking, *spec.docker_args(volumes), spec.image,
               *(spec.args if args is None else args)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    try:
        mapping = {}
        for port_name, port in spec.ports.items():
            out = subprocess.run(["docker", "port", container, f"{port}/tcp"], capture_output=True, text=True,
                                 check=True).stdout.split()[0]
            mapping[port_name] = int(out.rsplit(":", 1)[1])
        server = ContainerServer(container, spec, mapping)
        startup = next((p for p in spec.probes if p.kind == "startup"), None)
        budget = min(timeout, startup.period * startup.failures) if startup else timeout
        deadline = time.monotonic() + budget
        path = startup.path if startup else "/health"
        while server.status(path) != 200:
            state = server.inspect()["State"]
            if not state["Running"]:
                raise RuntimeError(f"container {name} exited ({state['ExitCode']}):\n{server.logs()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"container {name}: {path} not 200 after {budget:.0f}s:\n{server.logs()[-4000:]}")
            time.sleep(startup.period if startup else 2)
        yield server
    finally:
        subprocess.run(["docker", "stop", "--time", str(spec.grace_seconds), container], capture_output=True)
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
            (log_dir / f"container-{name}.log").write_text(logs.stdout + logs.stderr)
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def without_speculation(args: list[str]) -> list[str]:
    """The chart's launcher arguments with speculation removed: the same container as plain decoding."""
    return [a for a in args if not a.startswith(("--speculate=", "--speculation-strategy=", "--speculation-config="))]


if __name__ == "__main__":  # print the run settings the chart gives: python -m integration_tests.chart_container IMAGE
    print(ContainerSpec.from_manifests(render(sys.argv[1] if len(sys.argv) > 1 else "tgi-csd-cpu:cpu-test")).table())
