"""Shared test fixtures."""

import pytest
import torch


def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One intra-op thread: deterministic reductions and no fight with other CPU jobs."""
    yield from _single_thread()


@pytest.fixture(scope="module")
def one_thread_module():
    """One intra-op thread for a whole module (its module-scoped training fixtures included): tiny
    convolutions run as fast on one thread and do not stall on a busy machine."""
    yield from _single_thread()
