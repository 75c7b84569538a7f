"""S2DNet traces whole under torch.compile(fullgraph=True): the kernels are custom ops with fake
implementations, and the forward has no data-dependent Python control flow."""

import pytest
import torch

from s2d_fast.models import build_model, s2d_loss

from test_model import batch, small_cfg


@pytest.mark.parametrize("spatial", ["gaussian", "bilinear"])
def test_s2dnet_compiles_fullgraph_and_matches_eager(spatial):
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = small_cfg("S2D.SPATIAL_METHOD", spatial, "SNET.ARCH", "resnet18")
    model = build_model(cfg, 10)
    with torch.no_grad():
        model.space_head.bias.normal_(0, 0.3)
    model.set_stage("sampling")
    frames, n_valid, labels = batch()
    # aot_eager traces forward and backward through the same graphs Inductor would compile,
    # in seconds instead of minutes on two cores.
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")

    model.eval()
    with torch.no_grad():  # the inference fast path
        eager, comp = model(frames, n_valid), compiled(frames, n_valid)
    torch.testing.assert_close(comp["log_prob"], eager["log_prob"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(comp["detail"], eager["detail"], rtol=1e-5, atol=1e-5)

    model.train()
    torch.manual_seed(1)
    loss = s2d_loss(model(frames, n_valid), labels, 1.0)["loss"]
    grads = torch.autograd.grad(loss, model.sampler_parameters())
    torch.manual_seed(1)
    loss_c = s2d_loss(compiled(frames, n_valid), labels, 1.0)["loss"]
    grads_c = torch.autograd.grad(loss_c, model.sampler_parameters())
    torch.testing.assert_close(loss_c, loss, rtol=1e-4, atol=1e-5)
    for g, g_c in zip(grads, grads_c):
        torch.testing.assert_close(g_c, g, rtol=1e-3, atol=1e-5)
