"""Mean-opinion-score (MOS) studies: the paper's headline measure, where raters score SR images 1-5.

``study`` builds a self-contained study folder from several methods' outputs, ``server`` lets
raters score it in a browser (ratings land in ``ratings.sqlite`` inside the folder), and
``report`` turns the ratings into MOS tables, tests and a plot. Standard library + numpy + Pillow;
matplotlib only for the plot. A command plugin (``command``), registered through
``plfw_register_commands`` as a third party's would be; it may import the core (and, for
``from_ablation``, inference and the studies' report format); nothing else imports it.
"""
