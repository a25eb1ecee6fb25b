"""PELICAN's 2→2 layer computed without materialising the 10·F aggregations equals the
textbook form (concatenate, then Linear), and stays within memory at jet size."""

import torch
from torch import nn

from symfw.plugins.pelican import equivariant_linear, pair_means


def _masked_mean(x, weight, dims):
    """Mean of x over ``dims`` weighted by the mask ``weight`` (the textbook form: x times the mask)."""
    return (x * weight).sum(dims, keepdim=True) / weight.sum(dims, keepdim=True).clamp_min(1.0)


def textbook(x, node, linear):
    """Linear(concat(A(x))) with the concatenated (B, N, N, 10·F) tensor built explicitly."""
    pair = node[:, :, None, :] * node[:, None, :, :]
    x = x * pair
    diag = torch.diagonal(x, dim1=1, dim2=2).movedim(-1, 1)
    row, col = _masked_mean(x, pair, (2,)), _masked_mean(x, pair, (1,))
    full, trace = _masked_mean(x, pair, (1, 2)), _masked_mean(diag, node, (1,)).unsqueeze(1)
    parts = [x, x.transpose(1, 2), row.expand_as(x), col.expand_as(x), row.transpose(1, 2).expand_as(x),
             col.transpose(1, 2).expand_as(x), diag[:, :, None, :].expand_as(x), diag[:, None, :, :].expand_as(x),
             trace.expand_as(x), full.expand_as(x)]
    return linear(torch.cat(parts, -1) * pair) * pair


def test_the_blockwise_layer_equals_the_concatenated_one_float64():
    g = torch.Generator().manual_seed(0)
    B, N, F, H = 3, 7, 5, 4
    x = torch.randn(B, N, N, F, generator=g, dtype=torch.float64)
    node = torch.ones(B, N, 1, dtype=torch.float64)
    node[0, 5:] = 0  # padded particles
    node[2, 3:] = 0
    linear = nn.Linear(10 * F, H).double()
    masked = x * node[:, :, None, :] * node[:, None, :, :]
    torch.testing.assert_close(equivariant_linear(masked, node, linear), textbook(x, node, linear), rtol=1e-12,
                               atol=1e-12)


def test_permuting_particles_permutes_the_output():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 6, 3, generator=g, dtype=torch.float64)
    node = torch.ones(2, 6, 1, dtype=torch.float64)
    linear = nn.Linear(30, 4).double()
    perm = torch.randperm(6, generator=g)
    out = equivariant_linear(x, node, linear)
    moved = equivariant_linear(x[:, perm][:, :, perm], node, linear)
    torch.testing.assert_close(moved, out[:, perm][:, :, perm], rtol=1e-12, atol=1e-12)


def test_the_pair_means_are_the_masked_means():
    # x zero at padded pairs: plain sums divided by n (n² for all entries), no mask pass
    g = torch.Generator().manual_seed(2)
    B, N, F = 3, 6, 4
    node = torch.ones(B, N, 1, dtype=torch.float64)
    node[0, 4:] = 0
    node[1, 1:] = 0  # one real particle
    node[2] = 0  # none
    pair = node[:, :, None, :] * node[:, None, :, :]
    x = torch.randn(B, N, N, F, generator=g, dtype=torch.float64) * pair
    diag = torch.diagonal(x, dim1=1, dim2=2).movedim(-1, 1)
    row, col, d, trace, full = pair_means(x, node)
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)  # noqa: E731
    close(row, _masked_mean(x, pair, (2,)).squeeze(2))
    close(col, _masked_mean(x, pair, (1,)).squeeze(1))
    close(d, diag)
    close(trace, _masked_mean(diag, node, (1,)).squeeze(1))
    close(full, _masked_mean(x, pair, (1, 2)).flatten(1))
