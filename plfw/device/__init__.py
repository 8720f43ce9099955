"""Where and how tensors run: device, precision, memory format, compilation and DDP
(``runtime``), and the one-time speed probe behind ``auto`` (``probe``). May import
``plfw.core`` only.
"""
