"""jaxinit.audit on Flax re-creations of five published initialization bugs: each bug is
flagged at exactly its parameters (kinds and paths), and the correct init of the same model
gives no finding. Expected values are re-typed from the reference code (closed forms, scipy),
never taken from jaxinit.

Most models here are Flax NNX structures whose parameters are drawn with NumPy/SciPy as the
reference code draws them (no compilation), so that the default tests stay fast; the bug of
test 5 is Flax's own default initializer, drawn by Flax."""

from __future__ import annotations

import math
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from _stats import Z
from flax import nnx

import jaxinit
from jaxinit.app.cli import main
from jaxinit.recipes.audit import KINDS, Audit, audit
from jaxinit.recipes.recipe import Recipe, Rule


def kinds_paths(report: Audit) -> set[tuple[str, str]]:
    return {(f.kind, f.path) for f in report.findings}


def filled(make, draw, seed: int = 0) -> Any:
    """The NNX model ``make()`` builds, its parameters drawn by ``draw(path, shape, rng)``
    with NumPy (the structure is built abstractly: nothing is compiled)."""
    model = nnx.eval_shape(make)
    rng = np.random.default_rng(seed)
    for parts, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Param):
            path = "/".join(str(p) for p in parts)
            v = node.get_value()
            node.set_value(jnp.asarray(draw(path, tuple(v.shape), rng), v.dtype))
    return model


def vectors(path: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """Flax's defaults for vectors: biases 0, norm scales 1."""
    if path.endswith("bias"):
        return np.zeros(shape)
    if path.endswith("scale"):
        return np.ones(shape)
    return None


# --------------------------------------------------------------------------------------------
# 1. GPT-2 (nanoGPT model.py, GPT._init_weights and the loop after it): every Linear and
# Embedding N(0, 0.02^2), biases 0, LayerNorm 1/0, then "for pn, p in named_parameters(): if
# pn.endswith('c_proj.weight'): normal_(p, mean=0.0, std=0.02/math.sqrt(2 * config.n_layer))".
# The bug: c_proj left at 0.02.

L, D, V, T = 3, 32, 64, 16


def gpt_structure() -> nnx.Module:
    rngs = nnx.Rngs(0)

    class Attn(nnx.Module):
        def __init__(self):
            self.c_attn = nnx.Linear(D, 3 * D, rngs=rngs)
            self.c_proj = nnx.Linear(D, D, rngs=rngs)

    class MLP(nnx.Module):
        def __init__(self):
            self.c_fc = nnx.Linear(D, 4 * D, rngs=rngs)
            self.c_proj = nnx.Linear(4 * D, D, rngs=rngs)

    class Block(nnx.Module):
        def __init__(self):
            self.ln_1, self.attn = nnx.LayerNorm(D, rngs=rngs), Attn()
            self.ln_2, self.mlp = nnx.LayerNorm(D, rngs=rngs), MLP()

    class GPT(nnx.Module):
        def __init__(self):
            self.wte = nnx.Embed(V, D, rngs=rngs)
            self.wpe = nnx.Embed(T, D, rngs=rngs)
            self.h = nnx.List([Block() for _ in range(L)])
            self.ln_f = nnx.LayerNorm(D, rngs=rngs)

    return GPT()


def gpt(c_proj_std: float) -> Any:
    def draw(path, shape, rng):
        fixed = vectors(path, shape)
        if fixed is not None:
            return fixed
        return rng.normal(0.0, c_proj_std if "c_proj" in path else 0.02, shape)

    return filled(gpt_structure, draw)


GPT2 = Recipe(
    "gpt2 (test)",
    (
        Rule("**/c_proj/kernel", jaxinit.normal(0.02 / math.sqrt(2 * L)), "0.02/sqrt(2L)"),
        Rule("**/kernel", jaxinit.normal(0.02)),
        Rule("**/embedding", jaxinit.normal(0.02)),
        Rule("**/bias", jaxinit.zeros()),
        Rule("**/scale", jaxinit.ones()),
    ),
)
C_PROJ = {f"h/{i}/{m}/c_proj/kernel" for i in range(L) for m in ("attn", "mlp")}


def test_gpt2_c_proj_left_at_002_is_flagged_and_fixed():
    model = gpt(0.02)
    report = audit(model, GPT2)
    assert kinds_paths(report) == {("std", p) for p in C_PROJ}
    for f in report.findings:
        assert f.expected == pytest.approx(0.02 / math.sqrt(2 * L), rel=1e-12)
    assert report.uncovered == ()

    for block in model.h:  # nanoGPT's scaling, in place: the same compiled program
        for layer in (block.attn.c_proj, block.mlp.c_proj):
            layer.kernel.set_value(layer.kernel.get_value() / math.sqrt(2 * L))
    report = audit(model, GPT2)
    assert report.findings == ()
    # depth factor of c_proj: 1 / sqrt(2 L), the other weights 1; tolerance from the standard
    # errors of the two stds (c_proj's, and the smallest tensor of the 0.02 group, wpe)
    assert report.depth_law == "std"
    for r in report.rows:
        if r.path in C_PROJ:
            want = 1 / math.sqrt(2 * L)
        elif r.path.endswith(("kernel", "embedding")):
            want = 1.0
        else:
            assert math.isnan(r.depth_factor)
            continue
        n = math.prod(r.shape)
        tol = Z * want * math.sqrt(1 / (2 * n) + 1 / (2 * T * D))
        assert abs(r.depth_factor - want) <= tol, (r.path, r.depth_factor, want)
    assert "h/0/mlp/c_proj/kernel" in report.table()


@pytest.mark.slow
def test_gpt2_with_the_residual_recipe():
    residual = pytest.importorskip("jaxinit.recipes.residual")
    recipe = residual.gpt2(L)
    assert {p for _, p in kinds_paths(audit(gpt(0.02), recipe))} == C_PROJ
    assert audit(gpt(0.02 / math.sqrt(2 * L)), recipe).findings == ()


# --------------------------------------------------------------------------------------------
# 2. llama2.c (model.py, Transformer.__init__): every Linear and Embedding N(0, 0.02^2), then
# "for pn, p in self.named_parameters(): if pn.endswith('w3.weight') or
# pn.endswith('wo.weight'): normal_(p, mean=0.0, std=0.02/math.sqrt(2 * params.n_layers))".
# The FFN computes w2(silu(w1(x)) * w3(x)): its output projection is w2, not w3. Linen,
# drawn by Flax (jitted init), audited with module= and an example input.


class Attention(nn.Module):
    dim: int
    scaled: tuple[str, ...]
    n_layers: int

    @nn.compact
    def __call__(self, x):
        lin = _linear(self.scaled, self.n_layers)
        q, k, v = (lin(self.dim, n)(x) for n in ("wq", "wk", "wv"))
        att = nn.softmax(jnp.einsum("btd,bsd->bts", q, k) / math.sqrt(self.dim))
        return lin(self.dim, "wo")(att @ v)


class FeedForward(nn.Module):
    dim: int
    hidden: int
    scaled: tuple[str, ...]
    n_layers: int

    @nn.compact
    def __call__(self, x):
        lin = _linear(self.scaled, self.n_layers)
        return lin(self.dim, "w2")(nn.silu(lin(self.hidden, "w1")(x)) * lin(self.hidden, "w3")(x))


def _linear(scaled, n_layers):
    def lin(features, name):
        std = 0.02 / math.sqrt(2 * n_layers) if name in scaled else 0.02
        init = nn.initializers.normal(std)
        return nn.Dense(features, use_bias=False, kernel_init=init, name=name)

    return lin


class Llama(nn.Module):
    scaled: tuple[str, ...]
    n_layers: int = 2
    dim: int = 32
    hidden: int = 64
    vocab: int = 64

    @nn.compact
    def __call__(self, tokens):
        normal = nn.initializers.normal(0.02)
        x = nn.Embed(self.vocab, self.dim, embedding_init=normal, name="tok_embeddings")(tokens)
        for i in range(self.n_layers):
            a = nn.RMSNorm(name=f"attention_norm_{i}")(x)
            x = x + Attention(self.dim, self.scaled, self.n_layers, name=f"attention_{i}")(a)
            f = nn.RMSNorm(name=f"ffn_norm_{i}")(x)
            ff = FeedForward(self.dim, self.hidden, self.scaled, self.n_layers, name=f"ffn_{i}")
            x = x + ff(f)
        x = nn.RMSNorm(name="norm")(x)
        return nn.Dense(self.vocab, use_bias=False, kernel_init=normal, name="output")(x)


def llama_recipe(n_layers: int) -> Recipe:
    deep = jaxinit.normal(0.02 / math.sqrt(2 * n_layers))
    return Recipe(
        "llama (test)",
        (
            Rule("**/wo/kernel", deep, "attention output: 0.02/sqrt(2 n_layers)"),
            Rule("**/w2/kernel", deep, "FFN output: 0.02/sqrt(2 n_layers)"),
            Rule("**/kernel", jaxinit.normal(0.02)),
            Rule("**/embedding", jaxinit.normal(0.02)),
            Rule("**/scale", jaxinit.ones()),
        ),
    )


@pytest.mark.slow
@pytest.mark.parametrize("scaled", [("w3", "wo"), ("w2", "wo")], ids=["llama2c", "fixed"])
def test_llama2c_depth_scaling_on_w3(scaled):
    module = Llama(scaled)
    tokens = jnp.zeros((1, 4), jnp.int32)
    variables = jax.jit(module.init)(jax.random.key(0), tokens)
    report = audit(variables, llama_recipe(2), module=module, x=tokens)
    if scaled == ("w2", "wo"):
        assert report.findings == ()
    else:
        want = {("std", f"ffn_{i}/{w}/kernel") for i in range(2) for w in ("w2", "w3")}
        assert kinds_paths(report) == want
    rows = {r.path: r for r in report.rows}
    assert rows["ffn_0/w2/kernel"][3:6] == ("dense", 64, 32)  # layer, fan_in, fan_out


# --------------------------------------------------------------------------------------------
# 3. torchtitan (models/llama/model.py, init_weights): nn.init.trunc_normal_(w, mean=0.0,
# std=0.02) with PyTorch's default bounds a=-2, b=2, which are ABSOLUTE: +-100 standard
# deviations, so the truncation cuts nothing. Against a recipe asking for a normal truncated
# at +-2 standard deviations (jaxinit.truncated_normal(0.02)), the bound is exceeded and the
# std is the uncut normal's (0.02, not 0.02 * 0.8796).

CUT_STD = scipy.stats.truncnorm(-2, 2).std()  # 0.8796256610


def mlp3(a: float, b: float) -> Any:
    """Three 64x64 Linear layers, kernels ``0.02 * truncnorm(a, b)`` (bounds in sd)."""

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(64, 64, rngs=rngs) for _ in range(3)])

    def draw(path, shape, rng):
        fixed = vectors(path, shape)
        if fixed is not None:
            return fixed
        return 0.02 * scipy.stats.truncnorm.rvs(a, b, size=shape, random_state=rng)

    return filled(lambda: Net(nnx.Rngs(0)), draw)


TRUNC = Recipe(
    "trunc (test)",
    (Rule("**/kernel", jaxinit.truncated_normal(0.02)), Rule("**/bias", jaxinit.zeros())),
)


def test_torchtitan_truncation_cuts_nothing_and_fixed():
    std, a, b = 0.02, -2.0, 2.0  # trunc_normal_(std=0.02): a and b in absolute units
    report = audit(mlp3(a / std, b / std), TRUNC)
    kernels = [f"layers/{i}/kernel" for i in range(3)]
    assert kinds_paths(report) == {(k, p) for p in kernels for k in ("truncation", "std")}
    for f in report.findings:
        if f.kind == "truncation":
            assert f.expected == pytest.approx(0.04, rel=1e-12)  # 2 sd of 0.02
            assert f.measured > 0.04
        else:
            assert f.expected == pytest.approx(0.02 * CUT_STD, rel=1e-6)

    report = audit(mlp3(-2.0, 2.0), TRUNC)  # the truncation meant: +-2 sd
    assert report.findings == ()
    # the rows see the cut: max|w| / std is at most 2 / 0.8796 = 2.27 (up to the std's error)
    kernel = next(r for r in report.rows if r.path == "layers/0/kernel")
    assert kernel.truncated
    assert kernel.max_ratio <= 2 / CUT_STD * (1 + Z / math.sqrt(2 * 64 * 64))


# --------------------------------------------------------------------------------------------
# 4. tinygrad (examples/llama.py): w1 and w3 of the FFN drawn from the same seed, so they
# hold exactly the same values. Found without a recipe.


def ffn(layers: int = 2) -> Any:
    class FFN(nnx.Module):
        def __init__(self, rngs):
            self.w1 = nnx.Linear(32, 64, use_bias=False, rngs=rngs)
            self.w3 = nnx.Linear(32, 64, use_bias=False, rngs=rngs)
            self.w2 = nnx.Linear(64, 32, use_bias=False, rngs=rngs)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.blocks = nnx.List([FFN(rngs) for _ in range(layers)])
            self.norms = nnx.List([nnx.RMSNorm(32, rngs=rngs) for _ in range(layers)])

    def draw(path, shape, rng):  # LeCun normal, as PyTorch-ported code often does
        fixed = vectors(path, shape)
        return fixed if fixed is not None else rng.normal(0.0, shape[0] ** -0.5, shape)

    return filled(lambda: Net(nnx.Rngs(0)), draw)


def test_tinygrad_reused_key_found_without_recipe():
    model = ffn()
    report = audit(model)
    assert report.findings == ()
    # the RMSNorm scales are equal (ones), but constant: not a finding
    assert all(r.constant for r in report.rows if r.path.endswith("scale"))

    for block in model.blocks:  # tinygrad: w3 drawn with w1's seed
        block.w3.kernel.set_value(block.w1.kernel.get_value())
    report = audit(model)
    want = {("identical", f"blocks/{i}/{w}/kernel") for i in range(2) for w in ("w1", "w3")}
    assert kinds_paths(report) == want
    for f in report.findings:
        assert f.measured == pytest.approx(1.0, abs=1e-5)
        partner = f.path.replace("w1", "W").replace("w3", "w1").replace("W", "w3")
        assert f.expected == partner


@pytest.mark.slow
def test_correlated_pair_is_found():
    model = ffn(layers=1)
    w1, noise = (
        np.asarray(v.kernel.get_value(), np.float64)
        for v in (model.blocks[0].w1, model.blocks[0].w3)
    )
    mixed = 0.6 * w1 + 0.8 * noise  # correlation 0.6
    model.blocks[0].w3.kernel.set_value(jnp.asarray(mixed, jnp.float32))
    report = audit(model)
    want = {("correlated", "blocks/0/w1/kernel"), ("correlated", "blocks/0/w3/kernel")}
    assert kinds_paths(report) == want
    # the sample correlation, in float64 (numpy), is what is reported
    r = np.corrcoef(w1.ravel(), mixed.ravel())[0, 1]
    assert report.findings[0].measured == pytest.approx(r, abs=1e-5)


# --------------------------------------------------------------------------------------------
# 5. Flax Einsum's default kernel_init (lecun_normal: variance_scaling(1, "fan_in",
# "truncated_normal") with in_axis=-2, out_axis=-1) on a per-head kernel (h, d, k) of
# "bhd,hdk->bhk" counts the heads in the fan: fan_in = h * d, so the std is 1/sqrt(h) of
# LeCun's with the true fan_in d (0.408x for h = 6).

H, DH, K = 6, 16, 8
EQ = "bhd,hdk->bhk"
EINSUM = Recipe(
    "lecun (test)",
    (
        # Flax's lecun_normal: a normal cut at +-2 sd, rescaled to variance 1 / fan_in
        Rule("**kernel", jaxinit.variance_scaling(1.0, "fan_in", "truncated_normal")),
        Rule("**bias", jaxinit.zeros(), optional=True),
    ),
)


def per_head_lecun(shape, rng) -> np.ndarray:
    """LeCun's truncated normal with the true fan_in d of a (h, d, k) kernel (scipy)."""
    return scipy.stats.truncnorm.rvs(-2, 2, size=shape, random_state=rng) / CUT_STD / DH**0.5


def test_linen_einsum_default_fan():
    module = nn.Einsum((H, DH, K), EQ)
    variables = jax.jit(module.init)(jax.random.key(0), jnp.ones((1, H, DH)))  # Flax default
    report = audit(variables, EINSUM, module=module)
    assert kinds_paths(report) == {("std", "kernel")}
    (f,) = report.findings
    assert f.expected == pytest.approx(1 / math.sqrt(DH), rel=1e-12)
    n = H * DH * K
    assert abs(f.measured / f.expected - 1 / math.sqrt(H)) <= Z / math.sqrt(2 * n)
    row = next(r for r in report.rows if r.path == "kernel")
    assert (row.layer, row.fan_in, row.fan_out) == ("einsum", DH, K)

    # without module= the fans are the default axes' (h * d), whose law Flax's draw meets
    plain = audit(variables, EINSUM)
    assert plain.findings == ()
    assert [r.layer for r in plain.rows if r.path == "kernel"] == ["default"]
    assert "default axes" in plain.table()

    rng = np.random.default_rng(0)
    kernel = per_head_lecun((H, DH, K), rng)
    fixed = {"params": {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.zeros((H, K))}}
    assert audit(fixed, EINSUM, module=module).findings == ()


@pytest.mark.slow
@pytest.mark.parametrize("correct", [False, True], ids=["flax_default", "per_head"])
def test_nnx_einsum_default_fan(correct):
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.heads = nnx.Einsum(EQ, (H, DH, K), rngs=rngs)

    model = Net(nnx.Rngs(0))  # Flax's default kernel_init
    if correct:
        kernel = per_head_lecun((H, DH, K), np.random.default_rng(0))
        model.heads.kernel.set_value(jnp.asarray(kernel, jnp.float32))
    report = audit(model, EINSUM)
    assert kinds_paths(report) == (set() if correct else {("std", "heads/kernel")})


# --------------------------------------------------------------------------------------------
# the other kinds: a shifted mean, a fill that is not the rule's, NaN, a conv dirac


def test_mean_values_nonfinite_and_identity():
    rng = np.random.default_rng(0)
    dirac = np.zeros((3, 3, 4, 4))
    dirac[1, 1] = np.eye(4)  # the centred conv identity, re-typed
    nan = rng.normal(0.0, 0.02, (8, 8))
    nan[2, 3] = np.nan
    params = {
        "dense": {"kernel": 0.01 + rng.normal(0.0, 0.02, (64, 64)), "bias": np.ones(64)},
        "conv": {"kernel": dirac},
        "other": {"kernel": nan},
    }
    variables = {"params": jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)}

    def recipe(scale):
        return Recipe(
            "kinds (test)",
            (
                Rule("conv/kernel", jaxinit.identity(scale)),
                Rule("**/kernel", jaxinit.normal(0.02)),
                Rule("**/bias", jaxinit.zeros()),
            ),
        )

    report = audit(variables, recipe(1.0))
    want = {("mean", "dense/kernel"), ("values", "dense/bias"), ("nonfinite", "other/kernel")}
    assert kinds_paths(report) == want
    rows = {r.path: r for r in report.rows}
    assert rows["conv/kernel"].identity and not rows["dense/kernel"].identity
    assert rows["conv/kernel"].zeros == 9 * 16 - 4
    assert rows["dense/bias"].constant and not rows["other/kernel"].finite
    # a dirac of scale 1 where the rule says 2: its values differ by 1
    (f,) = [f for f in audit(variables, recipe(2.0)).findings if f.path == "conv/kernel"]
    assert (f.kind, f.measured) == ("values", 1.0)


# --------------------------------------------------------------------------------------------
# the command line: jaxinit audit module:factory [--recipe module:factory]

FACTORIES = """
import flax.linen as nn
import numpy as np
from flax import nnx

import jaxinit
from jaxinit.recipes.recipe import Recipe, Rule


def _lecun(shape):
    return np.random.default_rng(0).normal(0.0, shape[0] ** -0.5, shape).astype(np.float32)


def model():
    layer = nnx.eval_shape(lambda: nnx.Linear(64, 32, rngs=nnx.Rngs(0)))
    layer.kernel.set_value(_lecun((64, 32)))
    layer.bias.set_value(np.zeros(32, np.float32))
    return layer


def linen():
    variables = {"params": {"kernel": _lecun((64, 32)), "bias": np.zeros(32, np.float32)}}
    return nn.Dense(32), variables


def lecun():
    return Recipe("lecun", (Rule("kernel", jaxinit.lecun_normal()), Rule("bias", jaxinit.zeros())))


HE = Recipe("he", (Rule("kernel", jaxinit.he_normal()),))
"""


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "audit_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "audit_factories.py"
    sys.modules.pop("audit_factories", None)


def test_cli_audit_exit_codes_and_output(factories, capsys):
    assert main(["audit", "audit_factories:model", "--recipe", "audit_factories:lecun"]) == 0
    out = capsys.readouterr().out
    assert "kernel" in out and "no findings" in out

    # He's std is sqrt(2) times LeCun's: a finding at the kernel, exit status 1; the bias is
    # not covered by this recipe and is listed
    assert main(["audit", f"{factories}:linen", "--recipe", "audit_factories:HE"]) == 1
    out = capsys.readouterr().out
    assert "kernel: [std]" in out
    assert "not covered by the recipe (1):\n  bias" in out

    assert main(["audit", "audit_factories:linen", "--quiet"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("audit_factories", "is not of the form module:name"),
        ("audit_factories:nothing", "has no attribute 'nothing'"),
        ("no_such_module_xyz:model", "cannot import 'no_such_module_xyz'"),
        ("audit_factories:lecun", "must return an NNX model or (linen module, variables)"),
    ],
)
def test_cli_audit_usage_errors(factories, capsys, spec, message):
    with pytest.raises(SystemExit) as exit_:
        main(["audit", spec])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


def test_kinds():
    assert set(KINDS) == {
        "std",
        "mean",
        "values",
        "truncation",
        "identical",
        "correlated",
        "nonfinite",
    }
