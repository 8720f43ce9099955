"""How a number and its interval are written in a report's tables."""

from __future__ import annotations

from typing import Any

from plfw.studies.analysis import verdict


def fmt(value: float | None, metric: str) -> str:
    """PSNR in dB to 2 decimals, other metrics to 4 (``-`` for None)."""
    if value is None:
        return "-"
    return f"{value:.2f}" if metric.startswith("psnr") else f"{value:.4f}"


def interval_text(d: dict[str, Any], metric: str | None = None, signed: bool = False) -> str:
    """``value [low, high]`` (no interval: ``value (no interval)``)."""
    def f(v: float) -> str:
        return f"{v:+.4g}" if signed else (fmt(v, metric) if metric else f"{v:.4g}")

    if d.get("value") is None:
        return "-"
    if d.get("low") is None:
        return f"{f(d['value'])} (no interval)"
    return f"{f(d['value'])} [{f(d['low'])}, {f(d['high'])}]"


def marked(d: dict[str, Any], higher_is_better: bool, alpha: float) -> str:
    """A difference with its interval and Holm p, bold with ▲/▼ when it holds."""
    text = interval_text(d, signed=True)
    kind = verdict(d, higher_is_better, alpha)
    p = d.get("p_holm")
    if p is not None:
        text += f" p={p:.2g}"
    return text if kind == "same" else f"**{text}** {'▲' if kind == 'better' else '▼'}"
