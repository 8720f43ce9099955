"""The one-time speed probe behind `auto` precision and memory format on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plfw import probe
from plfw.runtime import make_runtime


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
