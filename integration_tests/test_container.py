"""The container tier's own checks (the HTTP checks every tier shares, exactness included, are in
`test_serving.py`): the CPU test image (`make image-cpu`) run with exactly the container spec the chart
renders (`charts/tgi-csd/ci/cpu-values.yaml`: UID 10001, read-only root filesystem, all capabilities
dropped, emptyDir /tmp and /dev/shm, the model on the model-cache volume, the cascade ConfigMap), in float32
through the image's shard wrapper; its plain-decoding reference is the same container without the
speculation arguments."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time

from integration_tests.workload import greedy_batch


def test_the_container_runs_with_the_charts_settings(containers):
    server = containers("csd")
    spec, inspect = server.spec, server.inspect()
    host, config = inspect["HostConfig"], inspect["Config"]
    assert config["User"] == f"{spec.user}:{spec.group}" == "10001:10001"
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert config["Cmd"] == spec.args and config["Entrypoint"] == ["text-generation-launcher"]
    assert {m["Destination"] for m in inspect["Mounts"]} >= {"/tmp", "/data", "/etc/tgi-csd"}
    assert "--speculation-config=/etc/tgi-csd/cascade.yaml" in spec.args
    assert config["WorkingDir"] == spec.working_dir == "/tmp"


def test_nothing_in_the_container_hits_the_read_only_root(containers, greedy):
    """The router saves the tokenizer into its working directory: with the image's WORKDIR under the
    read-only root it fell back to tokenizing through Python; the chart's workingDir (/tmp) fixes that."""
    for name in ("csd", "plain"):
        greedy(containers(name))
        log = containers(name).logs()
        assert "Read-only file system" not in log and "Failed to import python tokenizer" not in log, name
        assert "Permission denied" not in log, name


def test_metrics_are_served_on_the_ports_the_servicemonitor_scrapes(containers, greedy):
    server = containers("csd")
    greedy(server)
    assert set(server.spec.monitored_ports) == {"http", "csd-metrics"}
    tgi = server.get("/metrics", port="http")
    skipped = re.search(r"^tgi_request_skipped_tokens_sum(?:\{[^}]*\})? ([0-9.e+]+)$", tgi, re.M)
    assert skipped and float(skipped.group(1)) > 0  # the router saw accepted draft tokens
    plugin = server.get("/metrics", port="csd-metrics")
    steps = re.search(r"^tgi_csd_steps_total ([0-9.e+]+)$", plugin, re.M)
    assert steps and float(steps.group(1)) > 0


def test_the_probes_answer_during_load_and_after(containers):
    """Every probe's path answers 200 within the probe's timeout while 12 requests run, and afterwards."""
    server = containers("csd")
    done = threading.Event()
    load = threading.Thread(target=lambda: (asyncio.run(greedy_batch(server.url)), done.set()))
    load.start()
    answers = []
    while not done.is_set():
        for probe in server.spec.probes:
            started = time.monotonic()
            answers.append((probe.kind, server.status(probe.path, probe.port, probe.timeout),
                            time.monotonic() - started <= probe.timeout))
        time.sleep(0.5)
    load.join()
    after = [server.status(p.path, p.port, p.timeout) for p in server.spec.probes]
    assert len(answers) >= len(server.spec.probes)
    assert all(status == 200 and in_time for _, status, in_time in answers), answers
    assert after == [200] * len(server.spec.probes)


def test_the_charts_helm_test_passes_against_the_container(container_env, containers):
    """The `helm test` pod's own script, run with the pod's settings (UID 10001, read-only root, no
    capabilities) on the server's network. Its image (curlimages/curl) cannot be pulled here, so it runs in
    the test image, which has sh and curl. Docker has no Service: its name reaches the container (a network
    alias), and its port is replaced by the targetPort it routes to."""
    spec = container_env.spec
    containers("csd")
    pod = spec.test_pod
    [test] = pod["spec"]["containers"]
    service_port = spec.service["spec"]["ports"][0]
    target = spec.ports[service_port["targetPort"]] if isinstance(service_port["targetPort"], str) \
        else service_port["targetPort"]
    env = {e["name"]: e["value"] for e in test["env"]}
    env["URL"] = env["URL"].replace(f":{service_port['port']}/", f":{target}/")
    security = {**pod["spec"]["securityContext"], **test["securityContext"]}
    command = ["docker", "run", "--rm", "--network", container_env.network, "--entrypoint", test["command"][0],
               "--user", f"{security['runAsUser']}:{security['runAsGroup']}", "--read-only", "--cap-drop=ALL",
               "--security-opt", "no-new-privileges", *(a for k, v in env.items() for a in ("--env", f"{k}={v}")),
               spec.image, *test["command"][1:], *test.get("args", [])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"generated_text":' in result.stdout
