"""A study's compute, summed per machine: its sittings run on whatever CPU is lent."""

from __future__ import annotations

from pathlib import Path

from plfw.studies.compute import compute_text, duration
from plfw.studies.job_files import write_state

EPYC = "AMD EPYC (avx2 avx512f avx512_bf16) | torch 2.14.1 | 2 threads"
XEON = "Intel Xeon (avx2 avx512f) | torch 2.14.1 | 2 threads"


def test_durations_read_like_a_clock() -> None:
    assert duration(None) == "-"
    assert duration(42.4) == "42s"
    assert duration(61) == "1m 01s"
    assert duration(2 * 3600 + 59 * 60 + 31) == "2h 59m"


def test_compute_is_summed_per_machine_and_says_what_was_not_recorded(tmp_path: Path) -> None:
    jobs = [tmp_path / name for name in ("old", "resumed", "new", "unfinished", "never")]
    for d in jobs[:4]:
        d.mkdir()
    # trained before machines were recorded: its time counts, under "not recorded"
    write_state(jobs[0], {"finished": True, "train_seconds": 3600.0})
    # one sitting on each machine, scored as it finished
    write_state(jobs[1], {"finished": True, "train_seconds": 1800.0, "score_seconds": 400.0,
                          "sessions": [{"machine": XEON, "train_seconds": 600.0},
                                       {"machine": EPYC, "train_seconds": 1200.0}]})
    write_state(jobs[2], {"finished": True, "train_seconds": 1200.0, "score_seconds": 200.0,
                          "sessions": [{"machine": EPYC, "train_seconds": 1200.0}]})
    write_state(jobs[3], {"train_seconds": 60.0,
                          "sessions": [{"machine": EPYC, "train_seconds": 60.0}]})
    text = compute_text(jobs)
    assert text.startswith("All training together: 1h 51m (wall time, summed over jobs and "
                           "resumptions")
    assert f"41m 00s on {EPYC}" in text and f"10m 00s on {XEON}" in text
    assert "1h 00m on machines not recorded" in text
    assert text.index(EPYC) < text.index(XEON)  # the larger share first
    assert "scoring as each job finished: 10m 00s (recorded for 2 of 3 finished jobs)" in text
    # nothing trained yet: says so rather than "0s"
    assert compute_text(jobs[4:]) == "No job has trained yet."
