"""Building blocks for network plugins: loss-network input conventions and freezing
(``features``), the fused PReLU (``fused``), sub-pixel initialisation (``subpixel``) and finding
and loading pretrained weights (``weights``). May import ``plfw.core`` only.
"""
