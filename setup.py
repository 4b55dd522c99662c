"""The compiled hot path is optional: without a C compiler the pure-Python one is used."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("torchwatch._speedups", ["torchwatch/_speedups.c"], optional=True)])
