"""Hand-written parts kept for the per-seed, on-device design, checked against the well-kept library
that does the same job (the multilabel F1 is checked against scikit-learn in test_text.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_pinball_loss

from reglab.metrics.regression import pinball_loss


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_pinball_loss_is_scikit_learns(q) -> None:
    g = torch.Generator().manual_seed(0)
    y, pred = torch.randn(3, 200, generator=g, dtype=torch.float64), torch.randn(3, 200, generator=g, dtype=torch.float64)
    ours = pinball_loss(pred, y, q, dim=1)  # one value per stacked seed
    theirs = [mean_pinball_loss(y[s].numpy(), pred[s].numpy(), alpha=q) for s in range(3)]
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-12)
