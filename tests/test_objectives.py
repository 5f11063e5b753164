"""The ELBO and the IWAE bound on a fixed model."""

import math

import torch

from vae_zoo import zoo
from vae_zoo.objectives import (
    ElboSettings,
    IwaeSettings,
    Objective,
    TrainingContext,
    elbo,
    iwae,
)

START = TrainingContext()


def fixed_model():
    torch.manual_seed(0)
    model, _ = zoo.build("mlp-vae", (1, 6, 6), {"latent_dim": 3, "hidden": [16]})
    return model.eval()


def images():
    generator = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.full((8, 1, 6, 6), 0.3), generator=generator)


def repeated_bound(model, x, k, repeats):
    """`repeats` independent draws of the IWAE bound with k samples: (repeats, B)."""
    with torch.no_grad():
        return torch.stack([-iwae(model(x, k), START, IwaeSettings(k))["loss"]
                            for _ in range(repeats)])


def test_iwae_bound_with_k_1_equals_the_elbo_in_expectation():
    model, x = fixed_model(), images()
    with torch.no_grad():
        bound = repeated_bound(model, x, 1, 4000)
        elbo_value = torch.stack([-elbo(model(x, 1), START, ElboSettings())["loss"]
                                  for _ in range(4000)])
    difference = bound.mean(0) - elbo_value.mean(0)
    standard_error = (bound.var(0) / 4000 + elbo_value.var(0) / 4000).sqrt()
    assert (difference.abs() < 4 * standard_error + 1e-3).all()


def test_iwae_bound_is_non_decreasing_in_k():
    model, x = fixed_model(), images()
    means, errors = [], []
    for k in (1, 5, 50):
        draws = repeated_bound(model, x, k, 400).mean(1)  # mean over images, per repeat
        means.append(draws.mean().item())
        errors.append(draws.std().item() / math.sqrt(len(draws)))
    for (low, low_se), (high, high_se) in zip(zip(means, errors), zip(means[1:], errors[1:])):
        assert high > low - 3 * math.hypot(low_se, high_se)
    assert means[2] > means[0]  # with a poor untrained posterior the gain is large


def test_elbo_terms_and_beta_weighting():
    model, x = fixed_model(), images()
    torch.manual_seed(3)
    terms = Objective("elbo", ElboSettings(k=1, beta=4.0))(model, x)
    assert set(terms) == {"loss", "recon", "kl"}
    assert terms["loss"].shape == (8,)
    assert torch.allclose(terms["loss"], terms["recon"] + 4.0 * terms["kl"])
    # The KL of mlp-vae is closed form: ½ Σ (μ² + σ² - 1 - log σ²) of q(z|x) against N(0, I).
    with torch.no_grad():
        mean, log_var = model.encoder(x)
    textbook = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
    assert torch.allclose(terms["kl"], textbook, atol=1e-6)


def test_elbo_with_k_samples_averages_the_reconstruction_term():
    model, x = fixed_model(), images()
    torch.manual_seed(5)
    out = model(x, 7)
    terms = elbo(out, START, ElboSettings(k=7))
    assert torch.allclose(terms["recon"], -out.log_px_given_z.mean(0))
