"""Loss networks (feature extractors): VGG16/19 (``vgg``), timm, EfficientNet-Lite and ResNet-50
(``backbones``), the trunks of LPIPS, ST-LPIPS and DISTS (``trunks``). All are
:class:`plfw.TapExtractor` subclasses.

Each module is one plugin, loaded through its own entry point in pyproject.toml.
"""
