"""Callbacks: TensorBoard logging (``tensorboard``).

Each module is one plugin, loaded through its own entry point in pyproject.toml.
"""
