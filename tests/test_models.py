"""jaxinit.app.models: the ResNet's blocks per stage, the scanned MLP's layout."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxinit.app import models

X = jnp.ones((2, 8, 8, 3))


def test_resnet_blocks_per_stage_linen_and_nnx():
    # Two blocks per stage: the first of stages 2 and 3 halves the resolution.
    def init(model):  # shapes only: no computation
        return jax.eval_shape(model.init, jax.random.key(0), X)["params"]

    params = init(models.ResNet(widths=(4, 8, 16), blocks=2))
    names = sorted(k for k in params if "block" in k)
    assert names == [f"stage{i}_block{b}" for i in range(3) for b in range(2)]
    assert "proj" in params["stage1_block0"] and "proj" not in params["stage1_block1"]
    nnx_model = nnx.eval_shape(
        lambda: models.NNXResNet(3, widths=(4, 8, 16), blocks=2, rngs=nnx.Rngs(0))
    )
    assert len(nnx_model.blocks) == 6
    # One block per stage keeps the names block0 ... block2.
    one = init(models.ResNet(widths=(4, 8, 16)))
    assert sorted(k for k in one if "block" in k) == ["block0", "block1", "block2"]
    with pytest.raises(ValueError, match=r"ResNet: blocks=0 must be an int >= 1"):
        init(models.ResNet(blocks=0))


def test_scanned_mlp_stacks_layers_2_to_depth():
    x = jnp.ones((2, 5))

    def init(model):
        return jax.eval_shape(model.init, jax.random.key(0), x)["params"]

    p = init(models.MLP(depth=4, width=8, num_outputs=3, scan=True))
    assert p["Dense_0"]["kernel"].shape == (5, 8)
    assert p["layers"]["dense"]["kernel"].shape == (3, 8, 8)
    assert p["head"]["kernel"].shape == (8, 3)
    single = init(models.MLP(depth=1, width=8, scan=True))
    assert set(single) == {"Dense_0"}
