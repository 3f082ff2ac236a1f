"""Builds the optional fused-kernel extension pydiffusion._C (see csrc/)."""
from setuptools import setup

setup()
