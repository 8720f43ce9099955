"""Images in and out: reading and writing every supported format safely (``images``), MATLAB's
bicubic resize (``imresize``) and picture grids (``visuals``). May import ``plfw.core`` and
``plfw.storage``.
"""
