"""Diffusion exercise (E5): ContextUnet against a PyTorch re-implementation, and the DDPM maths.

The torch model (`TorchContextUnet` in dllab_jax/bench/torch_models.py) is the DeepLearning.AI /
TeaPearce ContextUnet with one context MLP per concept (summed), written with the course's
attribute names; its state dict is copied into the flax model by name. Samplers are checked
with the oracle eps of a one-point data distribution, for which exact denoising must land on
that point.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn as tnn

from dllab_jax import diffusion
from dllab_jax.bench.torch_models import TorchContextUnet
from dllab_jax.models.context_unet import ContextUnet

CONCEPT_DIMS = (2, 3, 1)

# ---------------------------------------------------------- torch reference -> flax variables


def torch_to_flax(model: TorchContextUnet) -> dict:
    """The torch state dict as flax variables {'params', 'batch_stats'}."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params, stats = {}, {}

    def conv(p):
        return {"kernel": sd[p + "weight"].transpose(2, 3, 1, 0), "bias": sd[p + "bias"]}

    def conv_t(p):  # torch [in, out, kh, kw] is applied flipped relative to flax's kernel
        kernel = sd[p + "weight"].transpose(2, 3, 0, 1)[::-1, ::-1]
        return {"kernel": np.ascontiguousarray(kernel), "bias": sd[p + "bias"]}

    def affine(p):
        return {"scale": sd[p + "weight"], "bias": sd[p + "bias"]}

    def dense(p):
        return {"kernel": sd[p + "weight"].T, "bias": sd[p + "bias"]}

    def rcb(p):
        prm = {"conv1": conv(p + "conv1.0."), "bn1": affine(p + "conv1.1.")}
        prm |= {"conv2": conv(p + "conv2.0."), "bn2": affine(p + "conv2.1.")}
        st = {
            f"bn{i}": {
                "mean": sd[f"{p}conv{i}.1.running_mean"],
                "var": sd[f"{p}conv{i}.1.running_var"],
            }
            for i in (1, 2)
        }
        return prm, st

    def embed(p):
        return {"fc1": dense(p + "model.0."), "fc2": dense(p + "model.2.")}

    params["init_conv"], stats["init_conv"] = rcb("init_conv.")
    for name in ("down1", "down2"):
        (p1, s1), (p2, s2) = rcb(f"{name}.model.0."), rcb(f"{name}.model.1.")
        params[name], stats[name] = {"block1": p1, "block2": p2}, {"block1": s1, "block2": s2}
    for name in ("up1", "up2"):
        (p1, s1), (p2, s2) = rcb(f"{name}.model.1."), rcb(f"{name}.model.2.")
        params[name] = {"upconv": conv_t(f"{name}.model.0."), "block1": p1, "block2": p2}
        stats[name] = {"block1": s1, "block2": s2}
    for name in ("timeembed1", "timeembed2"):
        params[name] = embed(name + ".")
    for i in range(len(model.contextembed1)):
        params[f"contextembed1_{i}"] = embed(f"contextembed1.{i}.")
        params[f"contextembed2_{i}"] = embed(f"contextembed2.{i}.")
    params["up0_conv"], params["up0_norm"] = conv_t("up0.0."), affine("up0.1.")
    params["out_conv1"], params["out_norm"] = conv("out.0."), affine("out.1.")
    params["out_conv2"] = conv("out.3.")
    to_jnp = functools.partial(jax.tree.map, jnp.asarray)
    return {"params": to_jnp(params), "batch_stats": to_jnp(stats)}


# ---------------------------------------------------------------------------- model tests


def concept_batch(rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
    shape = np.eye(2, dtype=np.float32)[rng.integers(0, 2, batch)]
    colour = rng.uniform(0, 1, (batch, 3)).astype(np.float32)
    size = rng.uniform(0.3, 1.0, (batch, 1)).astype(np.float32)
    return shape, colour, size


def abstract_init(model: ContextUnet, batch: int = 1):
    concepts = tuple(jnp.zeros((batch, d)) for d in model.concept_dims)
    return jax.eval_shape(
        lambda: model.init(
            jax.random.key(0), jnp.zeros((batch, 28, 28, 3)), jnp.zeros((batch,)), concepts
        )
    )


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def expected_param_count(f: int, dims=CONCEPT_DIMS, c: int = 3, side: int = 7) -> int:
    """The architecture's parameter count by hand (conv weights + biases, BN/GN affines)."""

    def rcb(cin, cout):  # two conv3x3 with bias, two BatchNorms
        return 9 * cin * cout + cout + 2 * cout + 9 * cout * cout + cout + 2 * cout

    def embed(d, e):
        return d * e + e + e * e + e

    total = rcb(c, f) + 2 * rcb(f, f) + rcb(f, 2 * f) + rcb(2 * f, 2 * f)  # init, down1, down2
    total += embed(1, 2 * f) + embed(1, f) + sum(embed(d, 2 * f) + embed(d, f) for d in dims)
    total += side * side * (2 * f) ** 2 + 2 * f + 2 * (2 * f)  # up0: ConvT + GroupNorm
    total += 4 * (4 * f) * f + f + 2 * rcb(f, f)  # up1
    total += 4 * (2 * f) * f + f + 2 * rcb(f, f)  # up2
    total += 9 * 2 * f * f + f + 2 * f + 9 * f * c + c  # out
    return total


def test_param_count_at_256_equals_torch_and_formula():
    flax_count = count(abstract_init(ContextUnet())["params"])
    with torch.device("meta"):  # shapes only, no allocation
        reference = TorchContextUnet(n_feat=256)
    torch_count = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    assert flax_count == torch_count == expected_param_count(256) == 32_878_595
    # Null embeddings add 2F + F per concept.
    with_nulls = count(abstract_init(ContextUnet(null_concepts=True))["params"])
    assert with_nulls == flax_count + len(CONCEPT_DIMS) * 3 * 256


@pytest.fixture(scope="module")
def tiny_pair():
    """A torch ContextUnet (n_feat=16) with non-trivial norms and its flax copy."""
    torch.manual_seed(0)
    reference = TorchContextUnet(n_feat=16)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, tnn.BatchNorm2d | tnn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            if isinstance(m, tnn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 28, 28, 3)).astype(np.float32)
    t = np.array([0.1, 0.9], np.float32)
    concepts = concept_batch(rng, 2)
    return reference, torch_to_flax(reference), (x, t, concepts)


def torch_forward(reference, x, t, concepts):
    with torch.no_grad():
        out = reference(
            torch.from_numpy(x).permute(0, 3, 1, 2),
            torch.from_numpy(t)[:, None],
            [torch.from_numpy(c) for c in concepts],
        )
    return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.slow  # parity against the PyTorch reference
def test_forward_matches_torch_eval_mode(tiny_pair):
    reference, variables, (x, t, concepts) = tiny_pair
    reference.eval()
    expected = torch_forward(reference, x, t, concepts)
    model = ContextUnet(features=16)
    shapes = jax.tree.map(jnp.shape, abstract_init(model))
    assert jax.tree.map(jnp.shape, variables) == shapes  # every parameter mapped, none extra
    got = jax.jit(lambda v, *a: model.apply(v, *a))(variables, x, t, concepts)
    assert got.dtype == jnp.float32 and got.shape == (2, 28, 28, 3)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4, rtol=0)


@pytest.mark.slow  # parity against the PyTorch reference
def test_forward_matches_torch_train_mode(tiny_pair):
    """Batch statistics; flax updates running stats with momentum 0.9 like torch's 0.1."""
    reference, variables, (x, t, concepts) = tiny_pair
    reference.train()
    try:
        expected = torch_forward(reference, x, t, concepts)
    finally:
        reference.eval()
    model = ContextUnet(features=16)
    apply = functools.partial(model.apply, train=True, mutable=["batch_stats"])
    got, updates = jax.jit(apply)(variables, x, t, concepts)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4, rtol=0)
    old = variables["batch_stats"]["init_conv"]["bn1"]["mean"]
    new = updates["batch_stats"]["init_conv"]["bn1"]["mean"]
    assert not np.allclose(old, new)


def test_null_concepts_drop_mask():
    model = ContextUnet(features=8, null_concepts=True)
    rng = np.random.default_rng(1)
    n = 3
    x = jnp.asarray(rng.normal(size=(n, 28, 28, 3)), jnp.float32)
    t = jnp.full((n,), 0.5)
    a, b = concept_batch(rng, n), concept_batch(rng, n)
    # Random values of the right shapes (compiling flax's initialisers costs ~10 s on CPU);
    # the nulls get values too, so "dropped" differs from "zero embedding".
    shapes = abstract_init(model)
    params = jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32), shapes)
    variables = {
        "params": params["params"],
        "batch_stats": jax.tree.map(lambda s: np.ones(s.shape, np.float32), shapes["batch_stats"]),
    }
    # All cases in one batch (eval mode treats examples independently): one compilation.
    mixed = (b[0], a[1], b[2])  # concept 1 from `a`, the others from `b`
    cases = [(a, True), (b, True), (a, [True, False, True]), (mixed, [True, False, True])]
    cases.append((a, False))
    concepts = tuple(np.concatenate([c[i] for c, _ in cases]) for i in range(3))
    masks = np.concatenate([np.broadcast_to(m, (n, 3)) for _, m in cases])
    out = jax.jit(model.apply)(
        variables, jnp.tile(x, (5, 1, 1, 1)), jnp.tile(t, 5), concepts, drop_mask=masks
    )
    a_all, b_all, a_partial, mixed_partial, a_kept = np.split(np.asarray(out), 5)
    np.testing.assert_allclose(a_all, b_all, atol=1e-6)  # all dropped: concepts ignored
    np.testing.assert_allclose(a_partial, mixed_partial, atol=1e-6)  # only concept 1 counts
    assert not np.allclose(a_all, a_kept, atol=1e-3)
    assert not np.allclose(a_partial, a_kept, atol=1e-3)
    plain = ContextUnet(features=8)
    with pytest.raises(ValueError, match="null_concepts"):
        plain.init(jax.random.key(0), x, t, a, drop_mask=np.ones((n,), bool))
    with pytest.raises(ValueError, match="concept 1"):
        model.init(jax.random.key(0), x, t, (a[0], a[2], a[1]))
    with pytest.raises(ValueError, match="drop_mask"):
        model.apply(variables, x, t, a, drop_mask=np.ones((n, 2), bool))


# ------------------------------------------------------------------------ diffusion maths


def test_schedule_matches_float64_closed_forms():
    T, beta1, beta2 = 500, 1e-4, 0.02
    s = diffusion.linear_schedule(T, beta1, beta2)
    assert s.num_timesteps == T
    for leaf in s:
        assert leaf.shape == (T + 1,) and leaf.dtype == jnp.float32
    beta = beta1 + (beta2 - beta1) * np.arange(T + 1) / T
    alphabar = np.cumprod(1.0 - beta)
    np.testing.assert_allclose(
        np.asarray(s.beta)[[0, 1, T]], [beta1, beta1 + (beta2 - beta1) / T, beta2]
    )
    np.testing.assert_allclose(s.alphabar, alphabar, atol=1e-5, rtol=0)
    np.testing.assert_allclose(s.alphabar[0], 1 - beta1, rtol=1e-7)  # index 0 is not "clean"
    np.testing.assert_allclose(s.sqrt_alphabar**2 + s.sqrt_one_minus_alphabar**2, 1.0, atol=1e-6)
    np.testing.assert_allclose(
        s.eps_coef, (1 - (1 - beta)) / np.sqrt(1 - alphabar), rtol=1e-5, atol=0
    )
    np.testing.assert_allclose(s.one_over_sqrt_alpha, 1 / np.sqrt(1 - beta), rtol=1e-6)
    np.testing.assert_allclose(s.sqrt_beta, np.sqrt(beta), rtol=1e-6)
    # The course computes in float32 torch; the float64 schedule agrees with it to rounding.
    b32 = (beta2 - beta1) * torch.arange(0, T + 1, dtype=torch.float32) / T + beta1
    ab32 = torch.cumsum(torch.log(1 - b32), dim=0).exp().numpy()
    np.testing.assert_allclose(s.alphabar, ab32, atol=1e-5, rtol=0)


def test_q_sample_moments_and_timesteps():
    s = diffusion.linear_schedule()
    n, t = 20_000, 250
    x0 = jnp.full((n, 2, 2, 1), 0.6)
    noise = jax.random.normal(jax.random.key(0), x0.shape)
    xt = diffusion.q_sample(s, x0, jnp.full((n,), t), noise)
    ab = float(s.alphabar[t])
    assert abs(float(xt.mean()) - np.sqrt(ab) * 0.6) < 0.01
    assert abs(float(xt.var()) - (1 - ab)) < 0.01
    # Per-example indices broadcast over the image axes.
    two = diffusion.q_sample(s, x0[:2], jnp.array([0, 500]), jnp.ones((2, 2, 2, 1)))
    expected = [s.sqrt_alphabar[i] * 0.6 + s.sqrt_one_minus_alphabar[i] for i in (0, 500)]
    np.testing.assert_allclose(two[:, 0, 0, 0], expected, rtol=1e-6)
    steps = diffusion.sample_timesteps(jax.random.key(1), 5000, 500)
    assert int(steps.min()) == 1 and int(steps.max()) == 500
    assert float(diffusion.diffusion_loss(jnp.ones((2, 3)), jnp.zeros((2, 3)))) == 1.0
    images = jnp.array([0.0, 0.25, 1.0])
    np.testing.assert_allclose(diffusion.to_model_range(images), [-1.0, -0.5, 1.0])
    np.testing.assert_allclose(diffusion.from_model_range(diffusion.to_model_range(images)), images)


def oracle_eps_fn(schedule, target, uncond_target=None):
    """The exact eps when all data equals `target`: (x_t - sqrt(ab_t) c) / sqrt(1 - ab_t).

    With `uncond_target`, drop_mask rows use that point instead (a second one-point model).
    """
    T = schedule.num_timesteps

    def eps_fn(x, t_over_T, drop_mask):
        t = jnp.round(t_over_T * T).astype(jnp.int32)
        c = jnp.broadcast_to(target, x.shape)
        if drop_mask is not None:
            c = jnp.where(drop_mask[:, None, None, None], uncond_target, c)
        ab = schedule.alphabar[t][:, None, None, None]
        return (x - jnp.sqrt(ab) * c) / jnp.sqrt(1 - ab)

    return eps_fn


SHAPE = (4, 6, 6, 3)


@pytest.fixture(scope="module")
def schedule():
    return diffusion.linear_schedule()


@pytest.fixture(scope="module")
def target():
    return jnp.asarray(np.random.default_rng(0).uniform(-0.8, 0.8, SHAPE[1:]), jnp.float32)


def jitted(sampler, eps_fn, **kwargs):
    return jax.jit(lambda s, rng: sampler(eps_fn, s, rng, SHAPE, **kwargs))


def assert_at_point(sampler, out, point):
    """DDIM (eta = 0) lands on the point; ancestral sampling within the schedule's noise floor.

    In the `ddpm_schedules` convention alphabar_0 = 1 - beta1, so the chain ends at noise level
    sqrt(1 - alphabar_0) = 0.01 rather than at clean data: with the exact eps, the last step
    returns sqrt(alpha_0) c + eps_1 sqrt(alpha_1) beta_0 / sqrt(1 - alphabar_1), i.e. c plus
    about 6.5e-3 per unit of eps_1 (measured: std 8e-3, max 0.027 over 432 values).
    """
    point = jnp.broadcast_to(point, out.shape)
    if sampler is diffusion.ddim_sample:
        np.testing.assert_allclose(out, point, atol=1e-5)
        return
    residual = np.asarray(out - point)
    assert abs(residual.mean()) < 2e-3
    assert residual.std() < 1.2e-2
    assert np.abs(residual).max() < 5e-2


def test_ancestral_sampler_recovers_single_point(schedule, target):
    start = time.perf_counter()
    out = jitted(diffusion.ancestral_sample, oracle_eps_fn(schedule, target))(
        schedule, jax.random.key(0)
    )
    out.block_until_ready()
    assert time.perf_counter() - start < 10  # T = 500 steps, compile included
    assert out.shape == SHAPE and out.dtype == jnp.float32
    assert_at_point(diffusion.ancestral_sample, out, target)


@pytest.mark.parametrize("num_steps, eta", [(50, 0.0), (500, 0.0), (50, 1.0)])
def test_ddim_sampler_recovers_single_point(schedule, target, num_steps, eta):
    eps_fn = oracle_eps_fn(schedule, target)
    out = jitted(diffusion.ddim_sample, eps_fn, num_steps=num_steps, eta=eta)(
        schedule, jax.random.key(0)
    )
    assert_at_point(diffusion.ddim_sample, out, target)


def test_ddim_eta_adds_noise(schedule):
    """With an imperfect eps, eta = 1 injects fresh noise that eta = 0 does not."""
    eps_fn = lambda x, t, m: 0.5 * x
    run = lambda eta: jitted(diffusion.ddim_sample, eps_fn, num_steps=10, eta=eta)(
        schedule, jax.random.key(0)
    )
    assert not np.allclose(run(0.0), run(1.0), atol=1e-3)


def test_ddim_timesteps():
    np.testing.assert_array_equal(diffusion.ddim_timesteps(500, 5), [500, 400, 300, 200, 100, 0])
    assert len(set(diffusion.ddim_timesteps(500, 500))) == 501
    with pytest.raises(ValueError):
        diffusion.ddim_timesteps(10, 11)


@pytest.mark.parametrize("sampler", [diffusion.ancestral_sample, diffusion.ddim_sample])
def test_guidance(schedule, target, sampler):
    """Guidance extrapolates between two one-point models: (1 + w) c_cond - w c_uncond."""
    other = -0.5 * target
    eps_fn = oracle_eps_fn(schedule, target, uncond_target=other)
    key = jax.random.key(3)
    plain = jitted(sampler, eps_fn)(schedule, key)
    zero = jax.jit(
        lambda s, rng, w: sampler(eps_fn, s, rng, SHAPE, guidance_weight=w)
    )  # a traced w takes the two-call path
    np.testing.assert_array_equal(zero(schedule, key, jnp.float32(0.0)), plain)
    w = 0.5
    guided = zero(schedule, key, jnp.float32(w))
    assert_at_point(sampler, guided, (1 + w) * target - w * other)


def test_samplers_are_one_compiled_loop(schedule, target):
    """The lowered program has a while loop and does not grow with T (nothing unrolled)."""
    short = diffusion.linear_schedule(T=20)
    for sampler in (diffusion.ancestral_sample, diffusion.ddim_sample):
        kwargs = {"num_steps": 10} if sampler is diffusion.ddim_sample else {}
        texts = [
            jitted(sampler, oracle_eps_fn(s, target), **kwargs)
            .lower(s, jax.random.key(0))
            .as_text()
            for s in (short, schedule)
        ]
        assert all("stablehlo.while" in text for text in texts)
        assert len(texts[0].splitlines()) == len(texts[1].splitlines())
