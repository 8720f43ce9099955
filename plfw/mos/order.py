"""The order in which one rater sees a study's items.

Every rater rates every version of every image (as in the paper), so the only freedom is the
order, and order matters: raters tire, drift and calibrate themselves on what they saw first.
The order is built to keep such effects from favouring any method:

1. Calibration items come first, in a fixed order (per image: nearest-neighbour = 1, then
   original = 5), as the paper calibrated its raters before the test.
2. The main phase is split into M rounds for M versions (methods plus the two anchors). In round k,
   rater r sees image i in version ``(i + k + r) mod M``. So each round shows every image once,
   with its versions spread over the methods, and across rounds each image appears in every version
   once. For a fixed image the (rater, round) -> version table is a Latin square: over any M
   consecutive raters, each version of each image is seen in each round (early, middle, late)
   exactly once, so no method is systematically rated when raters are fresh or tired.
3. Within a round the images are shuffled with a generator seeded by the study seed and the rater
   name, so the order looks random, differs between raters, and is the same again when a rater
   comes back (which is how resuming works: the next item is the first one not yet rated).
"""

from __future__ import annotations

import random

from plfw.mos.study import Study


def presentation_order(study: Study, rater: str, rater_index: int) -> list[str]:
    """Item ids for ``rater`` (the ``rater_index``-th rater to join, from 0), calibration first."""
    main = study.main_items
    versions = study.methods
    rng = random.Random(f"{study.seed}:{rater}")
    order = [item.id for item in study.calibration_items]
    for k in range(len(versions)):
        round_items = [main[(*key, versions[(i + k + rater_index) % len(versions)])].id
                       for i, key in enumerate(study.images)]
        rng.shuffle(round_items)
        order += round_items
    return order
