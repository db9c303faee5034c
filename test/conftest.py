"""Suite-wide settings."""
import os

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Small models on two cores shared with DDS and simulator processes run several times faster on one thread."""
    torch.set_num_threads(1)
    yield

