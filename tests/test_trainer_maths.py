"""Pure maths of the Flow-GRPO trainer: the SDE step and its log-prob, the KL, group
advantages with failure masks, the PPO-clip loss, reward/rollout overlap."""

import math

import pytest
import torch

from trainer_client.trainer.grpo import group_advantages, ppo_clip_loss
from trainer_client.trainer.sde import euler_step, gaussian_kl_same_std, sde_std, sde_step_with_log_prob
from trainer_client.trainer.timing import intersection_length, summarise_overlap, union_length

SHAPE = (3, 4, 2, 3, 5)  # [B,C,T,H,W]


def test_sde_log_prob_is_the_gaussian_density_averaged_over_elements():
    torch.manual_seed(0)
    x, v = torch.randn(SHAPE), torch.randn(SHAPE)
    sigma, sigma_next = torch.tensor([0.9, 0.6, 0.3]), torch.tensor([0.8, 0.5, 0.1])
    step = sde_step_with_log_prob(v, x, sigma, sigma_next, noise_level=0.7, sigma_cap=0.95)
    expected = torch.distributions.Normal(step.mean, step.std.expand_as(step.mean)).log_prob(step.next_sample)
    torch.testing.assert_close(step.log_prob, expected.mean(dim=(1, 2, 3, 4)))
    assert step.log_prob.dtype == torch.float32


def test_sde_mean_and_std_follow_the_formula():
    x, v = torch.full((1, 2), 2.0), torch.full((1, 2), -1.0)
    sigma, sigma_next, a = 0.5, 0.4, 0.7
    step = sde_step_with_log_prob(v, x, sigma, sigma_next, noise_level=a, sigma_cap=0.99, next_sample=torch.zeros(1, 2))
    std_t = a * math.sqrt(sigma / (1 - sigma))
    dt = sigma_next - sigma
    mean = 2.0 * (1 + std_t**2 / (2 * sigma) * dt) - 1.0 * (1 + std_t**2 * (1 - sigma) / (2 * sigma)) * dt
    assert step.mean[0, 0].item() == pytest.approx(mean, rel=1e-6)
    assert step.std.flatten()[0].item() == pytest.approx(std_t * math.sqrt(-dt), rel=1e-6)


def test_sde_step_without_noise_level_limit_matches_euler():
    """As the noise level goes to 0 the SDE mean becomes the Euler (ODE) step."""
    torch.manual_seed(1)
    x, v = torch.randn(SHAPE), torch.randn(SHAPE)
    step = sde_step_with_log_prob(v, x, 0.7, 0.5, noise_level=1e-4, sigma_cap=0.95)
    torch.testing.assert_close(step.mean, euler_step(v, x, 0.7, 0.5), atol=1e-6, rtol=0)


def test_sigma_one_uses_the_cap_and_stays_finite():
    std = sde_std(torch.tensor([1.0, 0.5]), noise_level=0.7, sigma_cap=0.9)
    assert torch.isfinite(std).all()
    assert std[0].item() == pytest.approx(0.7 * math.sqrt(1.0 / 0.1), rel=1e-5)
    assert std[1].item() == pytest.approx(0.7, rel=1e-6)


def test_per_sample_generators_make_noise_independent_of_batching():
    torch.manual_seed(2)
    x, v = torch.randn(SHAPE), torch.randn(SHAPE)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    whole = sde_step_with_log_prob(v, x, 0.8, 0.6, noise_level=0.7, sigma_cap=0.95, generator=gens)
    single = sde_step_with_log_prob(
        v[1:2], x[1:2], 0.8, 0.6, noise_level=0.7, sigma_cap=0.95, generator=[torch.Generator().manual_seed(11)]
    )
    torch.testing.assert_close(whole.next_sample[1:2], single.next_sample)


def test_sde_step_rejects_increasing_sigma_and_shape_mismatch():
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="smaller"):
        sde_step_with_log_prob(x, x, 0.5, 0.6, noise_level=0.7, sigma_cap=0.9)
    with pytest.raises(ValueError, match="differ"):
        sde_step_with_log_prob(x[:, :1], x, 0.5, 0.4, noise_level=0.7, sigma_cap=0.9)


def test_kl_is_zero_for_equal_means_and_matches_closed_form():
    mean = torch.randn(2, 5)
    std = torch.full((2, 1), 0.5)
    assert torch.equal(gaussian_kl_same_std(mean, mean.clone(), std), torch.zeros(2))
    kl = gaussian_kl_same_std(mean, mean + 0.1, std)
    torch.testing.assert_close(kl, torch.full((2,), 0.01 / (2 * 0.25)))


def test_group_advantages_normalise_within_groups():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 40.0])
    ok = torch.ones(6, dtype=torch.bool)
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    out = group_advantages(rewards, ok, groups, std_eps=1e-4, clip=5.0)
    for g in (0, 1):
        values = rewards[groups == g].double()
        expected = (values - values.mean()) / (values.std(unbiased=False) + 1e-4)
        torch.testing.assert_close(out.advantages[groups == g], expected.float())
    assert out.mask.all() and out.num_groups_used == 2


def test_failed_samples_are_masked_not_read_as_zero():
    groups = torch.tensor([0, 0, 0, 0])
    ok = torch.tensor([True, True, True, False])
    with_garbage = group_advantages(torch.tensor([0.5, 0.6, 0.7, -1e9]), ok, groups)
    with_nan = group_advantages(torch.tensor([0.5, 0.6, 0.7, float("nan")]), ok, groups)
    read_as_zero = group_advantages(torch.tensor([0.5, 0.6, 0.7, 0.0]), torch.ones(4, dtype=torch.bool), groups)
    torch.testing.assert_close(with_garbage.advantages, with_nan.advantages)
    assert with_garbage.mask.tolist() == [True, True, True, False]
    assert with_garbage.advantages[3] == 0
    # a fake 0 would have skewed the others: 0.5 would look like an above-average sample
    assert read_as_zero.advantages[0] > 0 > with_garbage.advantages[0]


def test_groups_without_enough_ok_samples_are_dropped_and_advantages_clipped():
    rewards = torch.tensor([1.0, 5.0, 0.0, 0.0] + [0.0] * 99 + [1.0])
    ok = torch.tensor([True, False] + [True] * 102)
    groups = torch.tensor([0, 0] + [1] * 102)
    out = group_advantages(rewards, ok, groups, clip=5.0, min_ok_per_group=2)
    assert not out.mask[:2].any()  # group 0 has one ok sample: no baseline
    assert out.num_groups_used == 1
    assert out.advantages.max().item() == pytest.approx(5.0)  # the outlier is clipped


def test_ppo_clip_loss():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.0, 1.5, 0.5, 1.5]))
    adv = torch.tensor([1.0, 1.0, 1.0, -1.0])
    loss, ratio = ppo_clip_loss(new, old, adv, clip_range=0.2)
    torch.testing.assert_close(ratio, torch.tensor([1.0, 1.5, 0.5, 1.5]))
    # A>0: gain capped at 1.2; ratio 0.5 is not clipped upwards (pessimistic bound); A<0: 1.5
    torch.testing.assert_close(loss, torch.tensor([-1.0, -1.2, -0.5, 1.5]))
    # gradient is zero where the clipped branch is active
    new = new.clone().requires_grad_(True)
    ppo_clip_loss(new, old, adv, clip_range=0.2)[0].sum().backward()
    assert new.grad[1] == 0 and new.grad[0] != 0


def test_union_intersection_and_overlap_share():
    assert union_length([(0, 2), (1, 3), (5, 6)]) == pytest.approx(4.0)
    assert intersection_length([(0, 2), (1, 3), (5, 6)], [(2.5, 5.5)]) == pytest.approx(1.0)
    # 3 rollouts back to back, each batch's reward takes 3 s from the end of its rollout
    rollouts = [(0, 2), (2, 4), (4, 6)]
    rewards = [(2, 5), (4, 7), (6, 9)]
    summary = summarise_overlap(rewards, rollouts)
    assert summary.reward_busy_s == pytest.approx(7.0)
    assert summary.reward_hidden_s == pytest.approx(4.0)  # rewards run 2..9, rollouts until 6
    assert summary.hidden_share == pytest.approx(4.0 / 7.0)
    # a blocking trainer (reward between rollouts) hides nothing
    blocking = summarise_overlap([(2, 5), (7, 10)], [(0, 2), (5, 7), (10, 12)])
    assert blocking.hidden_share == 0.0
