"""Datasets: HR folders with on-the-fly LR and paired LR/HR folders (``folders``), and HR
folders with Real-ESRGAN's random second-order degradation for blind SR (``degradation``).

Each module is one plugin, loaded through its own entry point in pyproject.toml.
"""
