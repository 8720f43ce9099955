"""Scoring SR methods as the papers do: per-image scores and summary tables (``evaluate``),
PSNR-Y and SSIM-Y (``metrics``), matching SR files to HR files by stem (``stems``). May import
``plfw.core`` and ``plfw.imaging``.
"""
