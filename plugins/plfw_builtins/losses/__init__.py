"""Losses: the paper's pixel, perceptual and adversarial losses and TV (``srgan``), Charbonnier,
MS-SSIM and DISTS (``fidelity``), the focal frequency loss and FDL (``frequency``), LPIPS
(``lpips``), LDL against the EMA generator (``ldl``), the anti-checkerboard losses
(``periodic``); ``common`` holds what they share.

Each module is one plugin, loaded through its own entry point in pyproject.toml.
"""
