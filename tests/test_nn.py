"""course_lib.nn: the shared network blocks, each against an independent reference."""
import math

import pytest
import torch

from course_lib.nn import ResidualBlock, SelfAttention2d, group_norm, mean_flat, sum_flat, timestep_embedding


def test_timestep_embedding_matches_the_transformer_formula():
    t = torch.tensor([0, 1, 17, 999])
    dim = 12
    emb = timestep_embedding(t, dim)
    assert emb.shape == (4, dim)
    half = dim // 2
    for row, step in enumerate(t.tolist()):
        for i in range(half):  # frequency i: 10000^(-i / half), sin in the first half, cos in the second
            angle = step / 10000 ** (i / half)
            assert math.isclose(emb[row, i].item(), math.sin(angle), abs_tol=2e-4)
            assert math.isclose(emb[row, half + i].item(), math.cos(angle), abs_tol=2e-4)


def test_timestep_embedding_distinguishes_all_steps_and_needs_even_dim():
    emb = timestep_embedding(torch.arange(1, 1001), 32)
    distances = torch.cdist(emb, emb) + torch.eye(1000) * 1e9
    assert distances.min() > 1e-3  # no two time steps share an embedding
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(torch.arange(3), 7)


def test_mean_flat_and_sum_flat():
    x = torch.arange(24.0).reshape(2, 3, 4)
    torch.testing.assert_close(mean_flat(x), torch.tensor([x[0].mean(), x[1].mean()]))
    torch.testing.assert_close(sum_flat(x), torch.tensor([66.0, 210.0]))


def test_group_norm_picks_a_divisor():
    assert group_norm(32).num_groups == 8 and group_norm(12).num_groups == 6 and group_norm(3).num_groups == 3


def test_residual_block_shapes_and_time_injection():
    torch.manual_seed(0)
    block = ResidualBlock(8, 16, emb_dim=20)
    x = torch.randn(2, 8, 7, 7)
    emb = torch.randn(2, 20)
    out = block(x, emb)
    assert out.shape == (2, 16, 7, 7)
    # the embedding shifts the features: a different embedding changes the output
    assert not torch.allclose(out, block(x, emb + 1.0))
    # with the second conv zeroed the block is exactly the skip connection (1x1 conv here)
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
    torch.testing.assert_close(block(x, emb), block.skip(x))


def test_self_attention_matches_explicit_softmax_and_is_permutation_equivariant():
    torch.manual_seed(0)
    attn = SelfAttention2d(8, num_heads=2)
    x = torch.randn(3, 8, 4, 5)
    out = attn(x)
    # explicit reference: per head softmax(q k^T / sqrt(d)) v over the 20 positions
    qkv = attn.qkv(attn.norm(x)).reshape(3, 3, 2, 4, 20)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # (N, heads, d, HW)
    weights = torch.softmax(torch.einsum("nhdi,nhdj->nhij", q, k) / math.sqrt(4), dim=-1)
    reference = x + attn.proj(torch.einsum("nhij,nhdj->nhdi", weights, v).reshape(3, 8, 4, 5))
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    # no positional information: permuting the positions permutes the output the same way
    perm = torch.randperm(20)
    x_perm = x.reshape(3, 8, 20)[:, :, perm].reshape(3, 8, 4, 5)
    torch.testing.assert_close(attn(x_perm).reshape(3, 8, 20), out.reshape(3, 8, 20)[:, :, perm], rtol=1e-5, atol=1e-5)
