"""Writes jaxinit's results on fixed keys to an ``.npz`` (``python _compile_dump.py OUT``), for
``test_compile_options.py`` to compare between XLA compile options: every initializer of the
registry (float32, bfloat16 and, where accepted, complex64; jitted and vmapped over keys),
``layer_stats``, ``lsuv`` and ``measure`` on an MLP and a convnet, and the mean-field
``predict`` and ``critical_sigma_w``. ``--only NAME`` writes the draws of that registry entry
alone."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from test_registry import REGISTRY  # this folder is the script's sys.path[0]

import jaxinit
from jaxinit import models


def main(out_path: str, only: str | None = None) -> None:
    out: dict[str, np.ndarray] = {}

    def put(name, tree):
        for i, leaf in enumerate(jax.tree.leaves(tree)):
            a = np.asarray(leaf)
            out[f"{name}/{i}"] = a.astype(np.float32) if a.dtype == jnp.bfloat16 else a

    key = jax.random.key(0)
    keys = jax.random.split(key, 3)
    for name, e in REGISTRY.items():
        if only is not None and name != only:
            continue
        dtypes = (jnp.float32, jnp.bfloat16, *((jnp.complex64,) if e.complex_ok else ()))
        for dtype in dtypes:
            label = f"init/{name}/{jnp.dtype(dtype).name}"
            put(f"{label}/jit", jax.jit(e.init, static_argnums=(1, 2))(key, e.shape, dtype))
            put(f"{label}/vmap", jax.vmap(lambda k, e=e, d=dtype: e.init(k, e.shape, d))(keys))
    if only is not None:
        np.savez(out_path, **out)  # pyright: ignore[reportArgumentType]
        return
    x = jax.random.normal(jax.random.key(1), (64, 32))
    images = jax.random.normal(jax.random.key(2), (8, 32, 32, 3))
    for name, model, batch in (
        ("mlp", models.MLP(depth=6, width=32), x),
        ("convnet", models.ConvNet(), images),
    ):
        st = jaxinit.layer_stats(model, batch, seeds=3, key=0)
        put(f"layer_stats/{name}", (st.mean, st.std, st.grad_std))
        variables = jax.jit(model.init)(jax.random.key(5), batch)
        new, report = jaxinit.lsuv(model, variables, batch)
        put(f"lsuv/{name}", (new, report.std_before, report.std_after))
        stats = ("mean", "std", "rms", "abs_max", "grad_std")
        put(f"measure/{name}", jaxinit.measure(model, variables, batch, stats=stats))
    for phi in ("relu", "tanh", "gelu"):
        put(f"predict/{phi}", jaxinit.predict(phi, sigma_w=1.3, sigma_b=0.1, depth=10))
        put(f"critical_sigma_w/{phi}", jnp.asarray(jaxinit.critical_sigma_w(phi)))
    np.savez(out_path, **out)  # pyright: ignore[reportArgumentType]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[3] if sys.argv[2:3] == ["--only"] else None)
