"""Metrics: PSNR-Y and SSIM-Y (``y_channel``), LPIPS, ST-LPIPS and DISTS (``lpips``), piq's
HaarPSI, GMSD, MS-GMSD and NIQE (``iqa``, with NIQE itself in ``niqe``), checkerboard energy
(``periodic``).

Each module is one plugin, loaded through its own entry point in pyproject.toml.
"""
