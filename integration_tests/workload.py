"""Prompts and request mixes shared by the integration suite and scripts/tgi_shard_bench.py."""

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
