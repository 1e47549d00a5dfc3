"""The user-facing application layer: the ``jaxinit`` command (:mod:`~jaxinit.app.cli`), rich
tables (:mod:`~jaxinit.app.report`), matplotlib figures (:mod:`~jaxinit.app.plotting`), dataset
loaders (:mod:`~jaxinit.app.data`) and the built-in demo models (:mod:`~jaxinit.app.models`).

It sits on top of the library and only uses it: nothing outside this package imports from it,
and only this package imports matplotlib or rich. Importing ``jaxinit.app`` loads none of its
modules; each loads its own dependencies when imported. The old paths (``jaxinit.models``,
``jaxinit.data``, ``jaxinit.cli``, ``jaxinit.report``, ``jaxinit.plotting``) re-export the same
objects.
"""
