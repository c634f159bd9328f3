"""Shared fixtures (imports stay inside them: the chart session has no torch)."""

import pytest


@pytest.fixture
def target():
    from helpers import tiny_llama

    return tiny_llama()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one torch thread (and do not fight other processes for cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
