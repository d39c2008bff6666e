"""Shared settings for the pytest-benchmark suites (small sizes: they must run on a laptop CPU)."""

import torch

torch.manual_seed(0)
