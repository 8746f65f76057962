"""Score-function terms and their baselines, against hand computations."""

import torch

from pyroext.guides.score import leave_one_out_baseline, score_function_term


def test_score_term_is_zero_with_the_reinforce_gradient():
    logits = torch.tensor([0.3, -1.2], requires_grad=True)
    log_prob = torch.nn.functional.logsigmoid(logits)
    elbo, baseline = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.5])
    term = score_function_term(elbo, log_prob, baseline)
    assert torch.equal(term, torch.zeros(2))
    (gradient,) = torch.autograd.grad(term.sum(), logits)
    expected = (elbo - baseline) * torch.sigmoid(-logits)  # d logsigmoid(a) / da
    assert torch.allclose(gradient, expected)


def test_baseline_over_particles_of_each_image():
    elbo = torch.tensor([[1.0, 10.0], [2.0, 20.0], [6.0, 60.0]])  # (particles, images)
    reference = torch.tensor([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0]])
    # elbo - reference: image 0 has 1, 1, 4 and image 1 has 5, 15, 55
    expected = reference + torch.tensor([[2.5, 35.0], [2.5, 30.0], [1.0, 10.0]])
    assert torch.allclose(leave_one_out_baseline(elbo, reference), expected)
    assert torch.allclose(
        leave_one_out_baseline(elbo), torch.tensor([[4.0, 40.0], [3.5, 35.0], [1.5, 15.0]])
    )


def test_baseline_over_images_with_one_particle():
    elbo = torch.tensor([1.0, 2.0, 6.0], requires_grad=True)
    reference = torch.tensor([1.0, 1.0, 1.0])
    baseline = leave_one_out_baseline(elbo, reference)
    assert torch.allclose(baseline, torch.tensor([4.0, 3.5, 1.5]))
    assert not baseline.requires_grad
    # one draw: nothing to leave out, the reference alone
    assert torch.equal(leave_one_out_baseline(elbo[:1], reference[:1]), reference[:1])
