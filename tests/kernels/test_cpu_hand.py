"""Hand-computed values on tiny tensors for the CPU implementations."""

import math

import pytest
import torch

import stylegrad.kernels as K


def test_gram_hand():
    F = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assert torch.equal(K.gram(F), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]))


def test_gram_half_input_gives_float32():
    F = torch.full((1, 2, 3), 300.0, dtype=torch.float16)  # 3 * 300^2 = 270000 > fp16 max 65504
    G = K.gram(F)
    assert G.dtype == torch.float32
    assert torch.equal(G, torch.full((1, 2, 2), 270000.0))


def test_style_loss_hand():
    G = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    A = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    loss, D = K.style_loss(G, A, loss_scale=0.5, grad_scale=2.0)
    assert torch.equal(loss, torch.tensor([0.5 * (0 + 4 + 9 + 4)]))
    assert torch.equal(D, torch.tensor([[[0.0, 4.0], [6.0, 4.0]]]))


def test_style_loss_broadcasts_target_over_batch():
    G = torch.stack([torch.ones(2, 2), 2 * torch.ones(2, 2)])
    loss, D = K.style_loss(G, torch.zeros(1, 2, 2), 1.0, 1.0)
    assert torch.equal(loss, torch.tensor([4.0, 16.0]))
    assert torch.equal(D, G)


def test_style_feature_grad_hand():
    D = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    F = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]], dtype=torch.bfloat16)
    out = K.style_feature_grad(D, F)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out.float(), torch.tensor([[[4.0, 5.0, 6.0], [1.0, 2.0, 3.0]]]))


def test_content_loss_hand():
    F = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    P = torch.tensor([[0.0, 4.0]])  # broadcast over the batch of 2
    loss, grad = K.content_loss(F, P)
    assert torch.equal(loss, torch.tensor([2.5, 8.0]))
    assert torch.equal(grad, torch.tensor([[1.0, -2.0], [0.0, -4.0]]))


def test_tv_loss_hand():
    x = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])
    loss, grad = K.tv_loss(x)
    # vertical differences 3, 4; horizontal 1, 2 -> 9 + 16 + 1 + 4
    assert torch.equal(loss, torch.tensor([30.0]))
    # d/dx00 = -2*3 - 2*1, d/dx01 = -2*4 + 2*1, d/dx10 = 2*3 - 2*2, d/dx11 = 2*4 + 2*2
    assert torch.equal(grad, torch.tensor([[[[-8.0, -6.0], [2.0, 12.0]]]]))


@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (1, 1, 1, 5), (1, 2, 4, 1)])
def test_tv_loss_degenerate(shape):
    x = torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)
    loss, grad = K.tv_loss(x)
    n_diffs = (shape[2] - 1) * shape[3] + shape[2] * (shape[3] - 1)
    # arange along the only long axis: every difference is 1 (W axis) or W (H axis, W == 1)
    assert torch.equal(loss, torch.full((shape[0],), float(shape[1] * n_diffs)))
    if shape[2] == shape[3] == 1:
        assert torch.equal(grad, torch.zeros(shape))
    else:  # interior points of a linear ramp have zero gradient, the ends -2 and +2
        g = grad.reshape(shape[0], shape[1], -1)
        assert torch.equal(g[..., 1:-1], torch.zeros_like(g[..., 1:-1]))
        assert torch.equal(g[..., 0], torch.full(g.shape[:2], -2.0))
        assert torch.equal(g[..., -1], torch.full(g.shape[:2], 2.0))


def test_relu_backward_accumulate_hand():
    act = torch.tensor([-1.0, 0.0, 2.0, 3.0])
    ga = torch.tensor([1.0, 1.0, 1.0, -1.0])
    gl = torch.tensor([10.0, 10.0, 10.0, 10.0])
    assert torch.equal(K.relu_backward_accumulate(ga, gl, act), torch.tensor([0.0, 0.0, 11.0, 9.0]))
    assert torch.equal(K.relu_backward_accumulate(None, gl, act), torch.tensor([0.0, 0.0, 10.0, 10.0]))
    assert torch.equal(K.relu_backward_accumulate(ga, None, act), torch.tensor([0.0, 0.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="neither"):
        K.relu_backward_accumulate(None, None, act)


def test_shape_errors_are_plain_value_errors():
    with pytest.raises(ValueError, match="3 dims"):
        K.gram(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="float32"):
        K.gram(torch.zeros(1, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        K.style_loss(torch.zeros(2, 3, 3), torch.zeros(2, 4, 4), 1.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        K.content_loss(torch.zeros(3, 5), torch.zeros(2, 5))
