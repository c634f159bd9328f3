"""Prompts, request mixes and HTTP helpers shared by the integration suite's tiers and
scripts/tgi_shard_bench.py."""

from __future__ import annotations

import asyncio
import json
import urllib.request

PROMPTS = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "The capital of France is",
    "import os\nimport sys\n\n\ndef list_files(path):\n    \"\"\"Return the files under path.\"\"\"\n",
    "Write a haiku about the sea.",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
    "Q: What is 12 * 12?\nA:",
    "for i in range(10):\n    print(i)\nfor j in range(10):\n",
    "Once upon a time, in a small village,",
    "SELECT name, age FROM users WHERE",
    "The three primary colors are red,",
    "def is_prime(n):\n    \"\"\"Return True if n is prime.\"\"\"\n",
    "A list of fruits: apple, banana, cherry,",
]

# Per-prompt token budgets: requests leave a shared batch at different steps.
BUDGETS = [24, 12, 32, 16, 28, 20, 8, 24, 30, 18, 26, 14]


async def greedy_batch(url: str) -> list[list[int]]:
    """The 12 prompts with their budgets, sent at once (so they share batches); each answer's token ids."""
    from text_generation import AsyncClient

    client = AsyncClient(url, timeout=600)
    responses = await asyncio.gather(*[client.generate(p, max_new_tokens=n, decoder_input_details=True)
                                       for p, n in zip(PROMPTS, BUDGETS)])
    return [[t.id for t in r.details.tokens] for r in responses]


async def stream_tokens(url: str, prompt: str, budget: int) -> list[int]:
    from text_generation import AsyncClient

    client = AsyncClient(url, timeout=600)
    return [r.token.id async for r in client.generate_stream(prompt, max_new_tokens=budget)]


def chat(url: str, stream: bool) -> str:
    """One greedy `/v1/chat/completions` answer (the client has no route for it), streamed or not."""
    body = {"model": "tgi", "messages": [{"role": "user", "content": "List three colours."}], "max_tokens": 24,
            "temperature": 0, "stream": stream}
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        text = response.read().decode()
    if not stream:
        return json.loads(text)["choices"][0]["message"]["content"]
    chunks = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and "[DONE]" not in line]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def post(url: str, path: str, body: dict) -> tuple[int, dict | str]:
    """POST `body` as JSON: (HTTP status, the decoded JSON or the raw text)."""
    import urllib.error

    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


async def generate_with_speculation(url: str, choices: list[str | None]) -> list[dict]:
    """The 12 prompts with their budgets at once, request i with `parameters.speculation = choices[i]`
    (None: unset), greedy with details: each response's JSON."""
    async def one(prompt: str, budget: int, choice: str | None) -> dict:
        parameters = {"max_new_tokens": budget, "details": True, "decoder_input_details": True}
        if choice is not None:
            parameters["speculation"] = choice
        status, answer = await asyncio.to_thread(post, url, "/generate", {"inputs": prompt, "parameters": parameters})
        assert status == 200, answer
        return answer

    return await asyncio.gather(*[one(p, n, c) for p, n, c in zip(PROMPTS, BUDGETS, choices)])
