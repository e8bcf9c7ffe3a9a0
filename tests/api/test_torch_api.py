"""Tensors in, torch as the oracle (skipped when torch is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

import klcli

torch = pytest.importorskip("torch")
F = torch.nn.functional
D = torch.distributions


def test_kl_of_tensors_matches_kl_div():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, 20, generator=generator, dtype=torch.float64)
    y = torch.randn(4, 3, 20, generator=generator, dtype=torch.float64)
    p, log_q = F.softmax(z, dim=-1), F.log_softmax(y, dim=-1)
    # kl_div(input=log q, target=p) is p·(log p − log q), summed here over the outcomes.
    expected = F.kl_div(log_q, p, reduction="none").sum(-1).numpy()
    np.testing.assert_allclose(klcli.kl(z, y, kind="logits"), expected, rtol=1e-9)
    np.testing.assert_allclose(klcli.kl(p, log_q.exp()), expected, rtol=1e-9)
    np.testing.assert_allclose(klcli.kl(z.transpose(0, 2), y.transpose(0, 2), kind="logits", axis=0),
                               expected.T, rtol=1e-9)
    np.testing.assert_allclose(klcli.entropy(z, kind="logits"), D.Categorical(logits=z).entropy().numpy(),
                               rtol=1e-9)


def test_float32_bfloat16_and_grad_tensors():
    z = torch.randn(5, 50, requires_grad=True)
    y = torch.randn(5, 50)
    expected = F.kl_div(F.log_softmax(y.double(), -1), F.softmax(z.detach().double(), -1),
                        reduction="none").sum(-1).numpy()
    np.testing.assert_allclose(klcli.kl(z, y, kind="logits"), expected, rtol=1e-9)
    z16, y16 = z.detach().bfloat16(), y.bfloat16()
    expected16 = F.kl_div(F.log_softmax(y16.double(), -1), F.softmax(z16.double(), -1),
                          reduction="none").sum(-1).numpy()
    np.testing.assert_allclose(klcli.kl(z16, y16, kind="logits"), expected16, rtol=1e-9)


def test_gaussians_match_torch_distributions():
    generator = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.randn(6, 3, generator=generator, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    s1 = torch.rand(6, 3, generator=generator, dtype=torch.float64) + 0.5
    s2 = torch.rand(6, 3, generator=generator, dtype=torch.float64) + 0.5
    expected = D.kl_divergence(D.Normal(mu1, s1), D.Normal(mu2, s2)).sum(-1).numpy()
    np.testing.assert_allclose(klcli.gaussian_kl(mu1, mu2, sigma1=s1, sigma2=s2), expected, rtol=1e-12)
    a = torch.randn(6, 3, 3, generator=generator, dtype=torch.float64)
    cov1 = a @ a.transpose(-1, -2) + 3 * torch.eye(3, dtype=torch.float64)
    b = torch.randn(6, 3, 3, generator=generator, dtype=torch.float64)
    cov2 = b @ b.transpose(-1, -2) + 3 * torch.eye(3, dtype=torch.float64)
    expected_full = D.kl_divergence(D.MultivariateNormal(mu1, cov1), D.MultivariateNormal(mu2, cov2)).numpy()
    np.testing.assert_allclose(klcli.gaussian_kl(mu1, mu2, cov1=cov1, cov2=cov2), expected_full, rtol=1e-10)


def test_perplexity_matches_cross_entropy():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 7, 13, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 13, (2, 7), generator=generator)
    labels[0, 2] = -100
    loss = F.cross_entropy(logits.reshape(-1, 13), labels.reshape(-1), ignore_index=-100)
    result = klcli.perplexity(logits, labels)
    assert result.nll == pytest.approx(float(loss), rel=1e-12)
    assert result.perplexity == pytest.approx(float(loss.exp()), rel=1e-12)
