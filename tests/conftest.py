"""Shared test setup: every test starts from the same seed on one thread.

Tiny models run fastest on one thread, and it keeps the suite's timings steady on a 2-core machine.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Run the test on one intra-op thread with torch seeded at 0."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
