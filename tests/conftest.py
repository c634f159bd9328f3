"""Shared fixtures."""

import pytest
from transformers import LlamaForCausalLM

from helpers import tiny_llama


@pytest.fixture
def target() -> LlamaForCausalLM:
    return tiny_llama()
