"""Studies: ``plfw ablate`` and what it is built from.

Owns ablation files and their jobs (``ablation``), what a job leaves on disk (``job_files``:
its state, final generator and score-cache key), training them resumably (``ablate``),
scoring finished models once per image and metric (``scores``), the statistics (``intervals``:
t intervals with seeds as the unit, Holm, Kendall; ``analysis``: matched-distortion tables,
curves), duplicate images across eval sets (``duplicates``), and the report (``report``,
``plots``). It is a command plugin (``command``), registered through
``plfw_register_commands`` as a third party's would be. It may import the core, training,
inference and evaluation modules; nothing outside ``plfw.studies`` imports it except
``plfw.mos.from_ablation``, which reads an ablation's report.
"""
