"""Files that must not be half-written or shared: atomic, weights-only checkpoints and writes
(``checkpoint``) and one-process-per-folder locks (``locks``). May import ``plfw.core`` and
``plfw.nn``.
"""
