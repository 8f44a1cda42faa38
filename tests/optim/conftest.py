"""Fixtures shared by the optimizer tests."""

import pytest
import torch


@pytest.fixture
def torch_float64():
    """torch's default dtype float64 for the test: torch keeps scalar optimizer state (step, NAdam's
    mu_product) in the default dtype, so float64 trajectories compare at 1e-10."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(prev)
