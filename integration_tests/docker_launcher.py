"""Start an image built from `patches/Dockerfile` with the docker SDK, like TGI's `docker_launcher`.

Runs `text-generation-launcher --model-id … --speculate 4 --speculation-strategy csd` (TGI's
entrypoint) on a random port with the GPUs attached, waits for `/health`, yields the base URL,
prints the container's logs and removes it afterwards. Options by env: `TGI_CSD_MODEL_ID`
(default HuggingFaceTB/SmolLM2-135M-Instruct), `DOCKER_VOLUME` (mounted at /data), `HF_TOKEN`.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import urllib.request


@contextlib.contextmanager
def docker_launcher(image: str, speculate: int = 4, strategy: str = "csd", timeout: float = 600):
    import docker

    client = docker.from_env()
    port = random.randint(8000, 10_000)
    args = ["--model-id", os.environ.get("TGI_CSD_MODEL_ID", "HuggingFaceTB/SmolLM2-135M-Instruct"),
            "--speculate", str(speculate), "--speculation-strategy", strategy, "--dtype", "float16"]
    env = {"LOG_LEVEL": "info,text_generation_router=debug"}
    if os.environ.get("HF_TOKEN"):
        env["HF_TOKEN"] = os.environ["HF_TOKEN"]
    volumes = {os.environ["DOCKER_VOLUME"]: {"bind": "/data", "mode": "rw"}} if os.environ.get("DOCKER_VOLUME") else {}
    gpus = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    container = client.containers.run(image, command=args, environment=env, detach=True, device_requests=gpus,
                                      volumes=volumes, ports={"80/tcp": port}, shm_size="1G")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            container.reload()
            if container.status == "exited":
                raise RuntimeError(f"container exited:\n{container.logs().decode(errors='replace')[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"container not healthy after {timeout}s")
            time.sleep(2)
        yield url
    finally:
        print(container.logs().decode(errors="replace")[-4000:])
        container.remove(force=True)
