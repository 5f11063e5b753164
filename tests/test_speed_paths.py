"""The speed work's claims (issue 16), each against the slower form it replaced: the same values
bit for bit where it says so, else the same up to float rounding."""

import copy

import pytest
import torch
from torch import nn

from vae_zoo import zoo
from vae_zoo.data.batches import bernoulli


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(7,), (100, 1, 28, 28), (3000, 784)])
def test_bernoulli_draws_what_torch_bernoulli_draws(dtype, shape):
    probabilities = torch.rand(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    probabilities.view(-1)[:3] = 0.0
    probabilities.view(-1)[3:6] = 1.0
    ours, theirs = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    drawn = bernoulli(probabilities, ours)
    assert drawn.dtype == dtype
    assert torch.equal(drawn, torch.bernoulli(probabilities, generator=theirs))
    # The generators end in the same state: later draws of the stream are unchanged too.
    assert torch.equal(ours.get_state(), theirs.get_state())


def train_steps(model, optimizer, batches: list[torch.Tensor]) -> None:
    for step, batch in enumerate(batches):
        torch.manual_seed(100 + step)  # the same z noise for both optimisers
        optimizer.zero_grad(set_to_none=True)
        (-model(batch).log_importance_weights().mean()).backward()
        optimizer.step()


def test_fused_adam_trains_as_the_reference_adam_up_to_rounding():
    torch.manual_seed(0)
    reference, _ = zoo.build("mlp-vae", (1, 8, 8), {"hidden": [32], "latent_dim": 4})
    fused = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(2)
    batches = [torch.bernoulli(torch.full((50, 1, 8, 8), 0.3), generator=generator)
               for _ in range(30)]
    train_steps(reference, torch.optim.Adam(reference.parameters(), lr=1e-3, foreach=False),
                batches)
    train_steps(fused, torch.optim.Adam(fused.parameters(), lr=1e-3, fused=True), batches)
    moved = max((a - b).abs().max().item() for a, b in
                zip(reference.parameters(), fused.parameters(), strict=True))
    for a, b in zip(reference.parameters(), fused.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    # The weights did move (30 steps of 1e-3), so the comparison is not of untrained weights.
    start, _ = zoo.build("mlp-vae", (1, 8, 8), {"hidden": [32], "latent_dim": 4})
    assert moved < 1e-5 < max((a - b).abs().max().item() for a, b in
                              zip(reference.parameters(), start.parameters(), strict=True))


@pytest.mark.parametrize("entry", ["conv-vae", "resnet-vae"])
def test_channels_last_convolutions_compute_what_the_default_layout_does(entry):
    """The nets lay their inputs out channels-last; the same layers on NCHW tensors give the same
    values and gradients up to rounding."""
    torch.manual_seed(0)
    model, _ = zoo.build(entry, (1, 28, 28))
    x = torch.rand(6, 1, 28, 28)
    z = torch.randn(6, 32, requires_grad=True)

    def default_layout():
        decoder = model.decoder
        feature_map = decoder.head(z).unflatten(-1, decoder.start)  # contiguous NCHW
        decoded = decoder.features(feature_map)[..., :28, :28]
        return decoded, model.encoder.head(model.encoder.features(x))

    decoded, head = default_layout()
    layouts = []
    first = next(layer for layer in model.decoder.features if isinstance(layer, nn.Module)
                 and hasattr(layer, "weight"))
    hook = first.register_forward_pre_hook(lambda module, inputs: layouts.append(
        (inputs[0].is_contiguous(), inputs[0].is_contiguous(memory_format=torch.channels_last))))
    model.decoder(z)
    hook.remove()
    assert layouts == [(False, True)]  # the decoder's convolutions do get channels-last maps
    mean, log_var = model.encoder(x)
    assert torch.allclose(model.decoder(z), decoded, rtol=1e-5, atol=1e-6)
    assert torch.allclose(torch.cat([mean, log_var], -1), head, rtol=1e-5, atol=1e-6)
    ours = torch.autograd.grad(model.decoder(z).square().sum(), [z, *model.decoder.parameters()])
    theirs = torch.autograd.grad(decoded.square().sum(), [z, *model.decoder.parameters()])
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_denormals_are_flushed_while_a_cell_runs_and_not_after():
    """A float32 result below 2^-126 becomes 0 with flushing on, and stays a denormal without."""
    from vae_zoo.harness.runner import denormals_flushed

    def halved() -> float:
        return (torch.tensor([2.0**-126]) * 0.5).item()

    assert halved() == 2.0**-127  # off by default: the test process is not flushing
    with denormals_flushed():
        assert halved() == 0.0
    assert halved() == 2.0**-127
