"""Data files DDPM Studio needs offline (sample photos, the MNIST subset, the built-in model).

Found through ``importlib.resources`` so they work from a checkout and from a regular ``pip install .``.
See LICENSES.md for each file's source and licence.
"""
