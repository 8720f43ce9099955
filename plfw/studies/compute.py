"""How long a study took, in total and per machine.

A long study trains over many sittings on whatever CPU each one lends, so a total alone hides
what it was measured on: each job's ``ablate.json`` records its sessions' machines, and the
time a job trained before plfw recorded them is reported as such rather than guessed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from plfw.studies.job_files import read_state

NOT_RECORDED = "machines not recorded"


def duration(seconds: float | None) -> str:
    """``2h 59m``, ``1m 01s``, ``42s`` (``-`` for None)."""
    if seconds is None:
        return "-"
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def compute_text(run_dirs: Iterable[Path]) -> str:
    """One paragraph: training time in total and per machine (largest share first), then the
    scoring done as each job finished, over the jobs that recorded it."""
    per_machine: Counter[str] = Counter()
    scored, recorded, finished = 0.0, 0, 0
    for run_dir in run_dirs:
        state = read_state(run_dir)
        total = state.get("train_seconds") or 0.0
        for session in state.get("sessions") or []:
            per_machine[session["machine"]] += session["train_seconds"]
            total -= session["train_seconds"]
        if total > 1.0:  # trained (in part) before sessions were recorded
            per_machine[NOT_RECORDED] += total
        finished += bool(state.get("finished"))
        if state.get("score_seconds") is not None:
            scored, recorded = scored + state["score_seconds"], recorded + 1
    if not per_machine:
        return "No job has trained yet."
    shares = "; ".join(f"{duration(s)} on {m}" for m, s in per_machine.most_common())
    text = (f"All training together: {duration(sum(per_machine.values()))} (wall time, summed "
            f"over jobs and resumptions: {shares})")
    if recorded:
        text += (f"; scoring as each job finished: {duration(scored)} (recorded for "
                 f"{recorded} of {finished} finished jobs)")
    return text + "."
