"""Generators: the paper's SRResNet (``srresnet``), ESRGAN's / BasicSR's RRDBNet and MSRResNet
(``esrgan``), and any architecture of the optional spandrel package by name, ``spandrel:<id>``
(``spandrel_archs``).

Each module is one plugin, loaded through its own entry point in pyproject.toml.
"""
