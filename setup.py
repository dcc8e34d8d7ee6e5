"""Shim for tools that still run setup.py: the packaging is declared in pyproject.toml."""
from setuptools import setup

setup()
