"""Datasets: HR folders with on-the-fly LR and paired LR/HR folders (``folders``).

Each module is one plugin, loaded through its own entry point in pyproject.toml.
"""
