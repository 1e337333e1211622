"""What every test of the attack library shares: torch on one thread."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny models run as fast on one thread, and a second one stalls whenever other
    processes hold the cores (oversubscription, ../shared/notes/clip.md): tens of seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
