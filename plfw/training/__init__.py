"""The parts a training run is made of: one phase's losses, discriminator and optimizers
(``phase``), one update (``step``), gradient-matched loss weights (``calibration``), step-keyed
batches (``sampling``), the run directory (``rundir``) and the run's summary (``summary``).
:mod:`plfw.assembly` puts them together and :mod:`plfw.trainer` runs them. May import
``plfw.core``, ``nn``, ``storage``, ``device``, ``imaging``, ``evaluation`` and ``inference``.
"""
