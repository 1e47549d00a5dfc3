"""The Flax boundary: the only package of jaxinit that imports Flax.

- :mod:`~jaxinit._flax.adapter`: linen variables and NNX models behind one interface
  (parameters by path, split/merge for ``jax.jit``);
- :mod:`~jaxinit._flax.kinds`: the layer-kind table (parameters, weight axes, affinity);
- :mod:`~jaxinit._flax.select`: the selection grammar of ``select=`` and ``where=``;
- :mod:`~jaxinit._flax.probe`: the interception engine (layer calls in forward order).

Private: the public modules (:mod:`jaxinit.probe`, :mod:`jaxinit.tree`, :func:`jaxinit.lsuv`,
:func:`jaxinit.measure`, :func:`jaxinit.layer_stats`) are built on it.
"""
