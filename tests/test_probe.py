"""The one-time speed probe behind `auto` precision and memory format on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plfw.device import probe
from plfw.device.runtime import make_runtime


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PLFW_CACHE_DIR", str(tmp_path))
    probe.cpu_choice.cache_clear()
    yield tmp_path / probe.CACHE_FILE
    probe.cpu_choice.cache_clear()


def test_probe_measures_once_and_remembers(cache: Path) -> None:
    first = probe.cpu_choice()
    assert isinstance(first["bf16"], bool) and isinstance(first["channels_last"], bool)
    assert first["seconds"]["fp32"] > 0 and first["rounds"] >= 5
    assert first["bf16"] == (first["bf16_speedup"] >= probe.MIN_SPEEDUP)
    assert first["channels_last"] == (first["channels_last_speedup"] >= probe.MIN_LAYOUT_SPEEDUP)
    assert probe.machine_key().endswith(f"probe {probe.VERSION}")  # a new method measures anew
    stored = json.loads(cache.read_text())
    assert stored[probe.machine_key()]["measured"] == first["measured"]
    probe.cpu_choice.cache_clear()
    assert probe.cpu_choice()["measured"] == first["measured"]  # read back, not measured again


def test_key_names_the_decisive_cpu_flags() -> None:
    # two different Xeons both call themselves "Intel(R) Xeon(R) Processor" in a VM
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    flags = next((set(line.split(":", 1)[1].split()) for line in lines
                  if line.startswith("flags")), None)
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags on this system")
    cpu = probe.machine_key().split(" | ")[0]
    in_key = set(cpu[cpu.rindex("(") + 1:-1].split()) if cpu.endswith(")") else set()
    assert in_key == {f for f in probe.KEY_FLAGS if f in flags}


def test_choice_compares_the_best_layout_of_each_precision() -> None:
    # the 2-core Xeon of 2026-12-03: contiguous bf16 beats contiguous fp32, but fp32
    # channels_last beats everything, so fp32 it is
    xeon = {(False, False): 0.099, (False, True): 0.058, (True, False): 0.0738,
            (True, True): 0.0618}
    got = probe.choose(xeon)
    assert (got["bf16"], got["channels_last"]) == (False, True)
    assert got["bf16_speedup"] == pytest.approx(0.058 / 0.0618, abs=1e-3)
    # a clear bf16 win in either layout takes bf16; the layout then follows bf16's timings
    fast_bf16 = {(False, False): 1.0, (False, True): 0.8, (True, False): 0.4, (True, True): 0.5}
    assert (probe.choose(fast_bf16)["bf16"], probe.choose(fast_bf16)["channels_last"]) == (
        True, False)
    # a gain under the thresholds keeps fp32 and the contiguous layout
    close = {(False, False): 1.0, (False, True): 0.97, (True, False): 0.9, (True, True): 0.9}
    assert (probe.choose(close)["bf16"], probe.choose(close)["channels_last"]) == (False, False)
    # bf16 gated out (only fp32 timed)
    fp32_only = {(False, False): 1.0, (False, True): 0.5}
    assert probe.choose(fp32_only) == {"bf16_speedup": 0.0, "channels_last_speedup": 2.0,
                                       "bf16": False, "channels_last": True}


def test_auto_follows_the_remembered_choice(cache: Path) -> None:
    for bf16, last in ((True, True), (False, False), (False, True)):
        cache.write_text(json.dumps({probe.machine_key(): {"bf16": bf16,
                                                           "channels_last": last}}))
        probe.cpu_choice.cache_clear()
        rt = make_runtime("cpu")
        assert (rt.bf16, rt.channels_last) == (bf16, last)
    # explicit settings win over the probe
    rt = make_runtime("cpu", "fp32", "false")
    assert (rt.bf16, rt.channels_last) == (False, False)


def test_damaged_cache_is_measured_again(cache: Path) -> None:
    cache.write_text("{not json")
    assert "bf16" in probe.cpu_choice()
    assert probe.machine_key() in json.loads(cache.read_text())


def test_explicit_settings_never_probe(cache: Path) -> None:
    make_runtime("cpu", "bf16", "true")
    assert not cache.exists()
