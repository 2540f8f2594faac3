"""Fixtures shared by the test modules."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def untrained_default_model():
    """Tests that name the embedded model ("tiny") get its untrained build (seconds), not the one taught to
    read the games (minutes; measured in bench/perception.py): VLMRL_FAST_TINY_PRETRAIN=0 for this process
    and the subprocesses it starts. tests/test_perception.py runs `teach_reading` itself at toy size."""
    before = os.environ.get("VLMRL_FAST_TINY_PRETRAIN")
    os.environ["VLMRL_FAST_TINY_PRETRAIN"] = "0"
    yield
    if before is None:
        os.environ.pop("VLMRL_FAST_TINY_PRETRAIN", None)
    else:
        os.environ["VLMRL_FAST_TINY_PRETRAIN"] = before


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP's spin-waits
    make two threads many times slower than one. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
