"""Shared fixtures (imports stay inside them: the chart session has no torch)."""

import pytest


@pytest.fixture
def target():
    from helpers import tiny_llama

    return tiny_llama()
