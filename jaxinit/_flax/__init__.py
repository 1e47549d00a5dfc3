"""The Flax boundary: linen/NNX adapter, layer-kind table and the selection grammar.

Private: the public modules (:mod:`jaxinit.tree`, ...) are built on it. Every other module of
jaxinit reaches Flax through here (:mod:`jaxinit.probe` is the part not yet moved in).
"""
