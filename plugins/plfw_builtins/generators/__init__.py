"""Generators: the paper's SRResNet (``srresnet``) and ESRGAN's / BasicSR's RRDBNet and MSRResNet
(``esrgan``).

Each module is one plugin, loaded through its own entry point in pyproject.toml.
"""
