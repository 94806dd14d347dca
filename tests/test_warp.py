"""The geometric part of augmentation (data/warp.py): the elastic field's strength and the
Gaussian blur it is smoothed with."""

from __future__ import annotations

import pytest
import torch

from digitnet.data.augment_config import AugmentConfig
from digitnet.data.warp import draw_elastic_field, gaussian_kernel, gaussian_matrix


def test_elastic_field_rms_is_alpha_pixels():
    cfg = AugmentConfig(elastic_alpha=2.0, elastic_sigma=3.0)
    field = draw_elastic_field(cfg, 256, 28, torch.Generator().manual_seed(0)) * (28 / 2)  # pixels
    interior = field[:, 10:18, 10:18]  # the blur's zero padding damps the border
    assert interior.square().mean().sqrt().item() == pytest.approx(2.0, rel=0.1)


def test_gaussian_kernel_radius_is_three_sigmas_at_least_one():
    assert len(gaussian_kernel(0.3)) == 3 and len(gaussian_kernel(1.0)) == 7
    assert len(gaussian_kernel(4.0)) == 25
    assert float(gaussian_kernel(2.0).sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 4.0])
def test_gaussian_matrix_is_convolution_with_the_kernel(sigma):
    kernel = gaussian_kernel(sigma)
    g = gaussian_matrix(sigma, 28)
    for j in (0, 5, 27):  # each column: the kernel centred on j, cut at the borders
        e = torch.zeros(28)
        e[j] = 1.0
        expected = torch.nn.functional.conv1d(e.view(1, 1, -1), kernel.view(1, 1, -1),
                                              padding=len(kernel) // 2).view(-1)
        assert torch.allclose(g @ e, expected, atol=1e-7)
