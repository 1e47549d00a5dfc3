"""Parametrizations and recipes built on :mod:`jaxinit.tree` and :func:`jaxinit.measure`."""
