"""Running trained generators: opening any generator file (``generators``), frozen fast copies
(``frozen``), one ``open_model`` for every command that runs a model (``model``), tiling,
the self-ensemble, ``plfw upscale`` and ``plfw export``. May import ``plfw.core``, ``nn``,
``storage``, ``device``, ``imaging`` and ``evaluation``.
"""
