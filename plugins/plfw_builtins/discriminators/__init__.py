"""Discriminators: the paper's (``srgan``), Real-ESRGAN's U-Net and a PatchGAN (``unet_patchgan``).

Each module is one plugin, loaded through its own entry point in pyproject.toml.
"""
