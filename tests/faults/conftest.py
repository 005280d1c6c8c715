"""Fault tests train tiny models on a shared machine: one torch thread keeps them from oversubscribing it."""

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
