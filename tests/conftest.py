"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: deterministic reductions and no fight with other CPU jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
