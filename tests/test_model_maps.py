"""jaxinit.meanfield.of_model: the mean-field maps of jaxinit.models' MLP, ResNet and
Transformer, linen and NNX, against recursions re-typed here (scipy quadrature for tanh,
closed forms for linear activations, a direct count of a padded convolution's taps), and
(slow) against layer_stats' 95% seed band on the models themselves (256 seeds, width 1024)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _stats import assert_mean
from flax import nnx
from scipy import integrate

import jaxinit
from jaxinit import meanfield as mf
from jaxinit.app import models

LN_EPS = 1e-6  # Flax's LayerNorm epsilon


def _tanh_m2(q):
    """E[tanh(sqrt(q) z)^2] by scipy quadrature."""
    f = lambda z: math.tanh(math.sqrt(q) * z) ** 2 * math.exp(-z * z / 2)  # noqa: E731
    return integrate.quad(f, -np.inf, np.inf, epsabs=1e-14, epsrel=1e-12)[0] / math.sqrt(
        2 * math.pi
    )


def _kernel_paths(params, prefix=""):
    """The path of every module owning a ``kernel``, from a linen params tree."""
    out = set()
    for k, v in params.items():
        if k == "kernel":
            out.add(prefix.rstrip("/"))
        elif isinstance(v, dict):
            out |= _kernel_paths(v, f"{prefix}{k}/")
    return out


def _nnx(make):
    return nnx.eval_shape(lambda: make(nnx.Rngs(0)))  # shapes only: of_model reads config


def test_mlp_maps_follow_the_kernel_init_and_fans():
    # Glorot normal: sigma_w^2 = fan_in * 2 / (fan_in + fan_out), per layer.
    init, q = jaxinit.glorot_normal(), 1.5
    sw2 = [2 * 4 / 12, 2 * 8 / 16, 2 * 8 / 11]  # 4 -> 8, 8 -> 8, head 8 -> 3
    want = [sw2[0] * q]
    want.append(sw2[1] * _tanh_m2(want[0]))
    want.append(sw2[2] * _tanh_m2(want[1]))
    lin = models.MLP(depth=2, width=8, activation=jnp.tanh, kernel_init=init, num_outputs=3)
    nm = _nnx(lambda r: models.NNXMLP(4, 2, 8, jnp.tanh, init, 3, rngs=r))
    for model, names in (
        (lin, ["Dense_0", "Dense_1", "head"]),
        (nm, ["layers/0", "layers/1", "head"]),
    ):
        out = mf.layers(mf.of_model(model, input_shape=(4,)), q)
        assert [x.name for x in out] == names
        np.testing.assert_allclose([x.state.q for x in out], want, rtol=1e-9)
    params = jax.eval_shape(lin.init, jax.random.key(0), jnp.ones((1, 4)))["params"]
    assert _kernel_paths(params) == {"Dense_0", "Dense_1", "head"}
    # The scanned MLP: layer_stats names the scan's iterations layers/dense[i].
    scan = models.MLP(depth=3, width=8, activation=jnp.tanh, kernel_init=init, scan=True)
    names = [x.name for x in mf.layers(mf.of_model(scan, input_shape=(4,)), q)]
    assert names == ["Dense_0", "layers/dense[0]", "layers/dense[1]"]


@pytest.mark.parametrize(
    ("init", "sw2"),
    [
        (nn.initializers.lecun_normal(), 1.0),  # Flax's default
        (jax.nn.initializers.he_uniform(), 2.0),
        (jax.nn.initializers.glorot_normal(), 2 * 6 / (6 + 8)),
        (jax.nn.initializers.normal(0.1), 6 * 0.01),
        (jaxinit.torch_default(), 1 / 3),
    ],
    ids=["flax-default", "he_uniform", "glorot_normal", "normal", "jaxinit-torch"],
)
def test_weight_scale_from_flax_and_jaxinit_initializers(init, sw2):
    model = models.MLP(depth=1, width=8, kernel_init=init)
    (out,) = mf.layers(mf.of_model(model, input_shape=(2, 3)), 1.0)
    assert out.state.q == pytest.approx(sw2, rel=1e-12)


def _transformer_reference(norm, depth, tokens, alpha):
    """Per named layer, q of a transformer with a linear MLP and LeCun weights (every
    sigma_w = 1), uniform attention, and two uncorrelated tokens of second moment 1; the
    recursions re-typed from the layers' definitions. Returns names and q's."""
    names, qs = [], []
    q, q12 = 1.0, 0.0  # the two tokens' second moment and cross moment

    def ln(q, q12):
        return q / (q + LN_EPS), q12 / (q + LN_EPS)

    for i in range(depth):
        p = f"block{i}/"
        h, h12 = ln(q, q12) if norm == "pre" else (q, q12)
        a = (h + (tokens - 1) * h12) / tokens  # the mean of T values: every token alike
        names += [p + "attn/query", p + "attn/key", p + "attn/value", p + "attn/out"]
        qs += [h, h, h, a]
        q, q12 = q + alpha**2 * a, q12 + alpha**2 * a
        if norm == "post":
            q, q12 = ln(q, q12)
        h, h12 = ln(q, q12) if norm == "pre" else (q, q12)
        names += [p + "mlp_in", p + "mlp_out"]
        qs += [h, h]
        q, q12 = q + alpha**2 * h, q12 + alpha**2 * h12
        if norm == "post":
            q, q12 = ln(q, q12)
    q, q12 = ln(q, q12)  # ln_f
    return [*names, "head"], [*qs, q]


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_transformer_maps_against_a_linear_reference(norm):
    def linear(x):
        return x

    dim, tokens, alpha = 8, 5, 0.5
    kw = {"depth": 2, "num_heads": 2, "activation": linear, "norm": norm, "alpha": alpha}
    lin = models.Transformer(dim=dim, num_outputs=dim, **kw)
    nm = _nnx(lambda r: models.NNXTransformer(dim, num_outputs=dim, rngs=r, **kw))
    names, want = _transformer_reference(norm, 2, tokens, alpha)
    for model in (lin, nm):
        net = mf.of_model(model, input_shape=(tokens, dim), uniform_attention=True)
        out = mf.layers(net, mf.State(1.0, c=0.0))
        assert [x.name for x in out] == names
        np.testing.assert_allclose([x.state.q for x in out], want, rtol=1e-9)
        assert out[3].state.c == 1.0  # uniform attention: every token the same
    x = jnp.ones((1, tokens, dim))
    params = jax.eval_shape(lin.init, jax.random.key(0), x)["params"]
    assert _kernel_paths(params) == set(names)
    # With an embedding the maps start at its output: input_shape is (tokens,).
    emb = models.Transformer(dim=dim, vocab_size=11, num_outputs=dim, **kw)
    net = mf.of_model(emb, input_shape=(tokens,), uniform_attention=True)
    out = mf.layers(net, mf.State(1.0, c=0.0))
    np.testing.assert_allclose([x.state.q for x in out], want, rtol=1e-9)
    # A single block maps as one block of the model.
    block = models.TransformerBlock(dim, 2, 4, linear, norm=norm, alpha=alpha)
    net = mf.of_model(block, input_shape=(tokens, dim), uniform_attention=True)
    one = mf.layers(net, mf.State(1.0, c=0.0))
    assert [x.name for x in one] == [n.removeprefix("block0/") for n in names[:6]]
    np.testing.assert_allclose([x.state.q for x in one], want[:6], rtol=1e-9)


@pytest.mark.parametrize(("sigma", "c"), [(1.0, 0.0), (2**0.5, 0.2)])
def test_softmax_attention_map_against_a_random_attention_layer(sigma, c):
    """One head of width 256 on 8 tokens with second moment 1 and pairwise cosine c
    exactly; query/key weights of scale sigma, value/output LeCun; 48 seeds of NumPy
    weights. Per seed: the output's mean square and the mean product of two tokens'
    outputs, against the map's q and q12."""
    n, t, seeds = 256, 8, 48
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((n, t + 1)))[0].T * math.sqrt(n)
    x = math.sqrt(c) * basis[0] + math.sqrt(1 - c) * basis[1:]  # (t, n)
    q_out, q12_out = [], []
    for _ in range(seeds):
        wq, wk, wv, wo = (rng.standard_normal((4, n, n)) / math.sqrt(n)) * np.array(
            [sigma, sigma, 1.0, 1.0]
        )[:, None, None]
        logits = (x @ wq) @ (x @ wk).T / math.sqrt(n)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out = p @ (x @ wv) @ wo
        gram = out @ out.T / n
        q_out.append(np.mean(np.diag(gram)))
        q12_out.append((gram.sum() - np.trace(gram)) / (t * (t - 1)))
    s = mf.attention(t, sigma_q=sigma, sigma_k=sigma).apply(mf.State(1.0, c=c))
    assert s.c is not None
    assert_mean(q_out, s.q, "q after attention")
    assert_mean(q12_out, s.c * s.q, "q12 after attention")
    # Uniform attention's (1 + (t - 1) c) / t is far outside: 0.125 and 0.3 here.
    assert s.q > 1.5 * (1 + (t - 1) * c) / t


def _coverage_by_convolution(size, kernel, stride, padding):
    """The mean fraction of a window's taps inside the image, counted by convolving an
    all-ones image (zero padded) with an all-ones kernel."""
    ones = jnp.ones((1, size, size, 1))
    k = jnp.ones((kernel, kernel, 1, 1))
    dn = jax.lax.conv_dimension_numbers(ones.shape, k.shape, ("NHWC", "HWIO", "NHWC"))
    pad = [(padding, padding)] * 2
    counts = jax.lax.conv_general_dilated(ones, k, (stride, stride), pad, dimension_numbers=dn)
    return float(counts.mean()) / kernel**2


def test_resnet_maps_with_zero_and_circular_padding():
    he, q0 = jaxinit.he_normal(), 1.0
    kw = {"widths": (4, 8, 8), "kernel_init": he}
    lin = models.ResNet(**kw)
    names = ["stem", "block0/conv1", "block0/conv2"]
    names += [f"block{i}/{n}" for i in (1, 2) for n in ("conv1", "conv2", "proj")]
    out = {x.name: x.state for x in mf.layers(mf.of_model(lin, input_shape=(8, 8, 3)), q0)}
    assert list(out) == [*names, "head"]
    params = jax.eval_shape(lin.init, jax.random.key(0), jnp.ones((1, 8, 8, 3)))["params"]
    assert _kernel_paths(params) == set(out)
    full = _coverage_by_convolution(8, 3, 1, 1)  # 8x8, 3x3, stride 1, pad 1
    assert out["stem"].q == pytest.approx(2 * full * q0, rel=1e-12)
    # conv2 sees relu(conv1): E[relu(h)^2] = q / 2, times 2 (He) and the coverage.
    assert out["block0/conv2"].q == pytest.approx(full * out["block0/conv1"].q, rel=1e-12)
    # block1's conv1 (3x3, stride 2, pad 1) and proj (1x1, stride 2) share their input.
    ratio = out["block1/conv1"].q / out["block1/proj"].q
    assert ratio == pytest.approx(_coverage_by_convolution(8, 3, 2, 1), rel=1e-12)
    # Circular padding: every tap is inside; NNX names the blocks blocks/{j}.
    nm = _nnx(lambda r: models.NNXResNet(3, circular=True, rngs=r, **kw))
    circ = {x.name: x.state for x in mf.layers(mf.of_model(nm, input_shape=(8, 8, 3)), q0)}
    assert list(circ) == [n.replace("block", "blocks/") if "/" in n else n for n in out]
    assert circ["stem"].q == pytest.approx(2 * q0, rel=1e-12)
    assert circ["blocks/1/conv1"].q == pytest.approx(circ["blocks/1/proj"].q, rel=1e-12)
    # BatchNorm (batch statistics, Flax's epsilon 1e-5): every conv's output is normalized,
    # v / (v + eps), so conv1 after the stem's BN and ReLU has q = 2 * coverage * that / 2.
    bn = mf.layers(mf.of_model(models.ResNet(batch_norm=True, **kw), input_shape=(8, 8, 3)), 5.0)
    assert bn[1].name == "block0/conv1"
    v = 2 * full * 5.0  # the stem's output
    assert bn[1].state.q == pytest.approx(full * v / (v + 1e-5), rel=1e-12)


BN_EPS = 1e-5  # Flax's BatchNorm epsilon


def _preact_reference(q0, blocks, bn):
    """Names and q's of every conv of a pre-activation ResNet (He kernels, sigma_w^2 = 2;
    ReLU; circular padding), and the stream's q after each block, re-typed from the block
    ``x + conv2(relu([bn2](conv1(y))))``, ``y = relu([bn1](x))``: the stream is a sum of
    independent zero-mean Gaussians, so ReLU halves its second moment, a He conv doubles
    it, and BatchNorm (batch statistics) sends q to q / (q + eps)."""
    norm = (lambda q: q / (q + BN_EPS)) if bn else (lambda q: q)
    q = 2 * q0
    names, qs, sums = ["stem"], [q], []
    for name, proj in blocks:
        y = norm(q) / 2
        c1 = 2 * y
        c2 = 2 * norm(c1) / 2
        names += [f"{name}/conv1", f"{name}/conv2"]
        qs += [c1, c2]
        if proj:
            names.append(f"{name}/proj")
            qs.append(2 * y)
        q = (2 * y if proj else q) + c2
        sums.append(q)
    return names, qs, sums


def _sums(net, q0):
    """The stream's q after each block's sum (the residual and parallel maps)."""
    return [
        s.state.q for s in mf.trace(net, q0) if isinstance(s.map, mf.ResidualMap | mf.ParallelMap)
    ]


@pytest.mark.parametrize("batch_norm", [False, True], ids=["no-bn", "bn"])
def test_preact_resnet_maps_against_a_recursion(batch_norm):
    q0 = 1.0
    kw = {"kernel_init": jaxinit.he_normal(), "circular": True, "preact": True}
    kw |= {"batch_norm": batch_norm}
    blocks = [("stage0_block0", False), ("stage0_block1", False)]
    blocks += [("stage1_block0", True), ("stage1_block1", False)]
    names, want, sums = _preact_reference(q0, blocks, batch_norm)
    # The head: relu([bn_final](x)) has mean sqrt(v / 2 pi) and second moment v / 2; global
    # pooling over 4x4 independent positions keeps the mean and divides the variance by 16.
    v = sums[-1] / (sums[-1] + BN_EPS) if batch_norm else sums[-1]
    m2 = v / (2 * math.pi)
    want_head = 2 * (m2 + (v / 2 - m2) / 16)  # He head, fan_in 8
    lin = models.ResNet(widths=(4, 8), blocks=2, **kw)
    nm = _nnx(lambda r: models.NNXResNet(3, widths=(4, 8), blocks=2, rngs=r, **kw))
    nnx_block = {b: f"blocks/{j}" for j, (b, _) in enumerate(blocks)}  # NNX: blocks/{j}/...
    nnx_names = [nnx_block[n.split("/")[0]] + n[n.index("/") :] if "/" in n else n for n in names]
    for model, want_names in ((lin, names), (nm, nnx_names)):
        out = mf.layers(mf.of_model(model, input_shape=(8, 8, 3)), q0)
        assert [x.name for x in out] == [*want_names, "head"]
        np.testing.assert_allclose([x.state.q for x in out], [*want, want_head], rtol=1e-9)
    np.testing.assert_allclose(_sums(mf.of_model(lin, input_shape=(8, 8, 3)), q0), sums, rtol=1e-9)
    params = jax.eval_shape(lin.init, jax.random.key(0), jnp.ones((1, 8, 8, 3)))["params"]
    assert _kernel_paths(params) == {*names, "head"}
    # One stage of identity blocks: without BatchNorm the He branch returns the stream's q,
    # so the stream doubles per block; with it the branch adds a fixed unit variance and,
    # from a stem of unit variance, the stream's q after block l is l + 1 (De & Smith 2020).
    one = mf.of_model(models.ResNet(widths=(4,), blocks=4, **kw), input_shape=(8, 8, 3))
    want_sums = [2.0, 3.0, 4.0, 5.0] if batch_norm else [2.0, 4.0, 8.0, 16.0]
    rtol = 1e-4 if batch_norm else 1e-12  # BN's epsilon: q / (q + 1e-5) per norm
    np.testing.assert_allclose(_sums(one, 0.5), want_sums, rtol=rtol)


def test_of_model_errors_name_the_problem():
    with pytest.raises(TypeError, match=r"of_model: model=ConvNet is not supported"):
        mf.of_model(models.ConvNet())
    with pytest.raises(ValueError, match=r"Transformer needs input_shape=\(tokens, dim\)"):
        mf.of_model(models.Transformer())
    with pytest.raises(ValueError, match=r"input_shape=\(8, 8\) must be \(height, width, ch"):
        mf.of_model(models.ResNet(), input_shape=(8, 8))
    with pytest.raises(TypeError, match=r"Dense_0 kernel_init=.* has no known variance law"):
        mf.of_model(models.MLP(kernel_init=lambda k, s, d=None: jnp.ones(s)), input_shape=(3,))
    with pytest.raises(ValueError, match=r"parallel: needs two or more branches, got 1"):
        mf.parallel(mf.dense(1.0))
    with pytest.raises(ValueError, match=r"conv: coverage=1.5 must be in \(0, 1\]"):
        mf.conv(1.0, coverage=1.5)


# ---- the 95% seed band (layer_stats, 256 seeds) on the Flax models, width 1024


def _inside_band(model, x, net, state, **kw):
    """Each layer's predicted std (sqrt of q minus the squared mean) against layer_stats'
    95% band over 256 seeds, matched by name. Returns, per layer, the distance of the
    prediction from the band's middle in half-widths (at most 1)."""
    st = jaxinit.layer_stats(model, x, seeds=256, key=1, grads=False, **kw)
    pred = {layer.name: layer.state for layer in mf.layers(net, state)}
    band = st.summary()["std"]
    assert set(st.names) <= set(pred), (st.names, list(pred))
    want = np.array([math.sqrt(pred[n].q - pred[n].mean ** 2) for n in st.names])
    lo, hi = np.asarray(band.lo), np.asarray(band.hi)
    assert np.all((lo <= want) & (want <= hi)), list(zip(st.names, lo, want, hi, strict=True))
    return dict(zip(st.names, np.abs(want - (lo + hi) / 2) / ((hi - lo) / 2), strict=True))


def _mup_attention(q, k, v, is_causal=False, **kwargs):
    """Logits ``q.k / d`` (μP's attention scaling): they vanish as the head grows, so the
    attention is uniform in the wide limit, as meanfield.attention assumes."""
    return nn.dot_product_attention(q / math.sqrt(q.shape[-1]), k, v, **kwargs)


@pytest.mark.slow
def test_mlp_inside_the_seed_band():
    width = 1024
    x = jax.random.normal(jax.random.key(3), (16, width))
    model = models.MLP(4, width, jnp.tanh, jaxinit.glorot_normal(), num_outputs=width)
    q0 = float(np.mean(np.asarray(x, np.float64) ** 2))
    _inside_band(model, x, mf.of_model(model, input_shape=(width,)), q0)


def _orthogonal_tokens(batch, tokens, dim):
    """Tokens whose features have mean 0 and mean square 1, pairwise orthogonal: the
    two-token state State(1, c=0) exactly."""
    g = np.random.default_rng(3).standard_normal((dim, batch * tokens))
    q = np.linalg.qr(g - g.mean(axis=0))[0] * math.sqrt(dim)
    return jnp.asarray(q.T.reshape(batch, tokens, dim), jnp.float32)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("norm", "attention"), [("pre", "softmax"), ("post", "softmax"), ("pre", "uniform")]
)
def test_transformer_inside_the_seed_band(norm, attention):
    """Two blocks, 8 tokens, 4 heads of 256, GELU, alpha 1/sqrt(2); Flax's default
    attention (softmax of q.k / sqrt(d)), or μP-scaled logits (q.k / d) with the uniform
    attention map. Pre-LN as NNX, post-LN as linen."""
    dim, tokens = 1024, 8
    kw = {"depth": 2, "num_heads": 4, "mlp_ratio": 1, "norm": norm, "alpha": 2**-0.5}
    kw |= {"num_outputs": dim}
    if attention == "uniform":
        kw["attention_fn"] = _mup_attention
    x = _orthogonal_tokens(2, tokens, dim)
    if norm == "pre":
        shapes = _nnx(lambda r: models.NNXTransformer(dim, rngs=r, **kw))
        model = lambda key: models.NNXTransformer(dim, rngs=nnx.Rngs(key), **kw)  # noqa: E731
    else:
        shapes = model = models.Transformer(dim=dim, **kw)
    net = mf.of_model(shapes, input_shape=(tokens, dim), uniform_attention=attention == "uniform")
    _inside_band(model, x, net, mf.State(1.0, c=0.0))


@pytest.mark.slow
@pytest.mark.parametrize("batch_norm", [False, True], ids=["no-bn", "bn"])
def test_resnet_first_block_inside_the_seed_band(batch_norm):
    """The layers where of_model's ResNet maps are exact (circular padding, up to the first
    block's sum: see of_model); 256 channels on 8x8 images; BatchNorm with batch statistics
    (the training-mode pass)."""
    width = 256
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 3))
    model = models.ResNet(
        widths=(width,) * 3, kernel_init=jaxinit.he_normal(), circular=True, batch_norm=batch_norm
    )
    first = {"stem", "block0/conv1", "block0/conv2"}
    net = mf.of_model(model, input_shape=(8, 8, 3))
    q0 = float(np.mean(np.asarray(x, np.float64) ** 2))
    kw = {"apply_kwargs": {"train": True}} if batch_norm else {}
    _inside_band(model, x, net, q0, select=lambda path, _: path in first, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("batch_norm", [False, True], ids=["no-bn", "bn"])
def test_resnet_inside_the_seed_band(batch_norm):
    """Pre-activation blocks keep the stream Gaussian, so every conv's map is exact in the
    wide limit (circular padding): stem, conv1, conv2 and proj of all three blocks, 1024
    channels in every stage, 8x8 images; BatchNorm with batch statistics."""
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 3))
    model = models.ResNet(
        widths=(1024,) * 3,
        kernel_init=jaxinit.he_normal(),
        circular=True,
        batch_norm=batch_norm,
        preact=True,
    )
    net = mf.of_model(model, input_shape=(8, 8, 3))
    q0 = float(np.mean(np.asarray(x, np.float64) ** 2))
    kw = {"apply_kwargs": {"train": True}} if batch_norm else {}
    convs = {"stem"} | {f"block{j}/{c}" for j in range(3) for c in ("conv1", "conv2")}
    convs |= {"block1/proj", "block2/proj"}
    off = _inside_band(model, x, net, q0, select=lambda path, _: path in convs, **kw)
    assert set(off) == convs
