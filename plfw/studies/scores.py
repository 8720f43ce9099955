"""Scoring an ablation: bicubic and every finished job, per image, set and metric plugin.

Scores are cached in each job's ``scores.json``, keyed by the model file's hash, the images and
the metric's parameters, so a report over a growing study only scores what is new. A job is
never scored with a metric whose networks its own losses trained with. Crops of the most
detailed window of a few images are kept for the report's picture.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from plfw.core.config import ImageSet
from plfw.core.errors import UserError
from plfw.core.registry import Registry, split_spec
from plfw.evaluation.evaluate import Pair, bicubic, load_pairs
from plfw.inference.model import open_model
from plfw.storage.checkpoint import atomic_write_bytes
from plfw.studies.ablation import Ablation, Job
from plfw.studies.job_files import finished_model, kept_key, model_key
from plfw.studies.trained_with import training_networks

BICUBIC = "bicubic"
SCORES_FILE = "scores.json"


@dataclass
class MetricInfo:
    label: str
    spec: Any
    higher_is_better: bool
    networks: tuple[str, ...]
    fn: Callable[[torch.Tensor, torch.Tensor], float]

    @property
    def key(self) -> str:
        return json.dumps(self.spec, sort_keys=True)


@dataclass
class Scores:
    """Per job label: set -> metric -> per-image values (image order of the set's pairs)."""

    values: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    #: per run (its first finished seed) and "HR": (set, image index) -> crop
    crops: dict[str, dict[tuple[str, int], torch.Tensor]] = field(default_factory=dict)
    picks: list[tuple[str, int, str]] = field(default_factory=list)  # (set, index, image name)


def _metrics(ab: Ablation, registry: Registry) -> list[MetricInfo]:
    infos, seen = [], set()
    for spec in ab.spec.metrics:
        name, params = split_spec(spec, f"{ab.path}: metrics")
        fields = getattr(registry.get("metric", name).params, "__dataclass_fields__", {})
        if "border" in fields:  # the benchmark protocol: border = scale, like PSNR
            params.setdefault("border", ab.scale)
        full = {"name": name, **params}
        fn = registry.build("metric", full, f"{ab.path}: metrics")
        label = name if name not in seen else f"{name}#{len(seen)}"
        seen.add(name)
        infos.append(MetricInfo(label, full, bool(getattr(fn, "higher_is_better", True)),
                                tuple(getattr(fn, "networks", ())), fn))
    return infos


def _detail_crop(hr: torch.Tensor, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` window with the most detail (mean |Laplacian| of luma):
    where SR methods differ most, unlike a flat sky."""
    h, w = hr.shape[-2:]
    if h <= size or w <= size:
        return 0, 0
    rgb = hr.expand(3, -1, -1) if hr.shape[0] == 1 else hr
    y = rgb.mul(torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)[None, None]
    lap = F.conv2d(y, torch.tensor([[[[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]]]), padding=1).abs()
    stride = max(1, size // 4)
    energy = F.avg_pool2d(lap, size, stride)[0, 0]
    index = int(energy.argmax())
    return (index // energy.shape[1]) * stride, (index % energy.shape[1]) * stride


def _crop_choice(pairs: dict[str, list[Pair]], count: int, sets: list[str] | None = None
                 ) -> list[tuple[str, int]]:
    """``count`` (set, index) picks, round-robin over ``sets`` (default: all of them): a study
    whose benchmark images may not be redistributed shows crops of its own images only."""
    pairs = {n: ps for n, ps in pairs.items() if sets is None or n in sets}
    picks: list[tuple[str, int]] = []
    depth = 0
    while len(picks) < count and any(depth < len(p) for p in pairs.values()):
        for name, ps in pairs.items():
            if depth < len(ps) and len(picks) < count:
                picks.append((name, depth))
        depth += 1
    return picks


def _set_key(pairs: list[Pair], ev: ImageSet, scale: int) -> str:
    """A set's cache key from its images (names and pixels, and the LR files' when given; LR
    made by bicubic follows from HR and scale), not from its folder: scores cached on one machine
    hold in a clone elsewhere, where a generator the study did not keep cannot be re-scored."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(pair.name.encode())
        for image in (pair.hr, pair.lr) if ev.lr else (pair.hr,):
            digest.update(str(tuple(image.shape)).encode())
            digest.update(image.mul(255).round().to(torch.uint8).numpy().tobytes())
    return json.dumps({"images": digest.hexdigest()[:16], "count": len(pairs),
                       "lr": "files" if ev.lr else "bicubic", "scale": scale})


def _path_key(ev: ImageSet, scale: int) -> str:
    """The key plfw 0.2 and earlier cached scores under (the folders' absolute paths)."""
    return json.dumps([str(Path(ev.hr).resolve()), str(Path(ev.lr).resolve()) if ev.lr else None,
                       ev.limit, scale])


def _migrate(cache: dict[str, Any], mkey: str, set_keys: dict[str, tuple[str, str]]) -> None:
    """Rename a model's entries cached under folder paths to the images' keys (in place)."""
    for old, new in set_keys.values():
        if f"{mkey} {old}" in cache and f"{mkey} {new}" not in cache:
            cache[f"{mkey} {new}"] = cache.pop(f"{mkey} {old}")


def _read_cache(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SCORES_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _score_method(method: Callable[[torch.Tensor], torch.Tensor], pairs: list[Pair],
                  metrics: list[MetricInfo], cached: dict[str, list[float]],
                  crops: dict[int, tuple[int, int]], size: int
                  ) -> tuple[dict[str, list[float]], dict[int, torch.Tensor]]:
    """Per-image values of every metric not in ``cached``, and the crops at ``crops``."""
    todo = [m for m in metrics if m.key not in cached]
    if not todo and not crops:
        return cached, {}
    values: dict[str, list[float]] = {m.key: [] for m in todo}
    shown: dict[int, torch.Tensor] = {}
    for i, pair in enumerate(pairs):
        if not todo and i not in crops:  # scores cached: run the model for the crops only
            continue
        lr = pair.lr if pair.lr.shape[0] == 3 else pair.lr.expand(3, -1, -1)
        with torch.inference_mode():
            sr = method(lr).float().cpu()
        if pair.hr.shape[0] == 1 and sr.shape[0] == 3:
            sr = sr.mean(0, keepdim=True)
        for m in todo:
            values[m.key].append(float(m.fn(sr, pair.hr)))
        if i in crops:
            top, left = crops[i]
            shown[i] = sr[..., top: top + size, left: left + size]
    return {**cached, **values}, shown


Inputs = tuple[dict[str, list[Pair]], list[MetricInfo]]


def load_inputs(ab: Ablation, registry: Registry) -> Inputs:
    """The evaluation pairs of every set and the metric plugins, built once for many jobs."""
    pairs = {}
    for name, ev in ab.sets.items():
        pairs[name] = load_pairs(ev.hr, ev.lr, ab.scale, ev.limit)
        if not pairs[name]:
            raise UserError(f"{ab.path}: eval set '{name}': no images in {ev.hr}")
    return pairs, _metrics(ab, registry)


def score(ab: Ablation, registry: Registry, device: str = "auto", log: Any = print,
          only: Job | None = None, inputs: Inputs | None = None
          ) -> tuple[dict[str, list[Pair]], list[MetricInfo], Scores, dict[str, str]]:
    """Score bicubic and every finished job on every set (cached per job).

    ``only``: score that one job and nothing else, without crops (as it finishes, so its scores
    outlive a generator the study does not keep). ``inputs``: from :func:`load_inputs`, when
    many calls share them (loading General100 and the metrics takes ~15 s)."""
    pairs, metrics = inputs if inputs is not None else load_inputs(ab, registry)
    picks = ([] if only is not None else
             _crop_choice(pairs, ab.spec.report.crop_images, ab.spec.report.crop_sets))
    size = ab.spec.report.crop
    windows = {(s, i): _detail_crop(pairs[s][i].hr, size) for s, i in picks}
    scores, status = Scores(), {}
    # (label, run, job, model file, cache key); bicubic has neither run nor model, a job whose
    # generator was not kept (``kept_key``) only its key: it can be reported, not re-scored
    methods: list[tuple[str, str | None, Job | None, Path | None, str]] = [
        (BICUBIC, None, None, None, BICUBIC)] if only is None else []
    for name, path in ab.references.items() if only is None else ():
        if not path.is_file():
            raise UserError(f"{ab.path}: eval.references.{name}: model not found: {path}")
        methods.append((name, name, None, path, model_key(path)))
    for job in ab.jobs if only is None else [only]:
        model, key = finished_model(job), kept_key(job)
        status[job.label] = ("finished" if model is not None else
                             "finished (generator not kept)" if key is not None else
                             "in progress" if (job.run_dir / "checkpoints").is_dir() else
                             "not started")
        if model is not None or key is not None:
            methods.append((job.label, job.run, job, model,
                            model_key(model) if model is not None else key))  # type: ignore[arg-type]
    cropped_runs: set[str] = set()
    # per set: (the key of caches written before keys came from the images, the images' key)
    set_keys = {n: (_path_key(ab.sets[n], ab.scale), _set_key(ps, ab.sets[n], ab.scale))
                for n, ps in pairs.items()}
    for index, (label, run, job, model, mkey) in enumerate(methods, 1):
        trained = training_networks(job.config, registry) if job is not None else set()
        allowed = [m for m in metrics if not set(m.networks) & trained]
        # bicubic's scores are cached beside the jobs, in <out>/bicubic/
        folder = job.run_dir if job is not None else ab.out / (run or BICUBIC)
        cache = _read_cache(folder)
        _migrate(cache, mkey, set_keys)
        scorable = model is not None or run is None
        if not scorable and any(
                m.key not in cache.get(f"{mkey} {set_keys[n][1]}", {})
                for n in pairs for m in allowed):
            status[label] = "not scored here (generator not kept)"
            log(f"plfw ablate: {label}: generator not kept and not scored on these sets: "
                f"left out")
            continue
        want_crops = scorable and (run or BICUBIC) not in cropped_runs
        method = None
        per_set: dict[str, dict[str, list[float]]] = {}
        for set_name, ps in pairs.items():
            skey = f"{mkey} {set_keys[set_name][1]}"
            cached = dict(cache.get(skey, {}))
            spots = ({i: windows[(s, i)] for s, i in picks if s == set_name}
                     if want_crops else {})
            if any(m.key not in cached for m in allowed) or spots:
                if method is None:
                    fresh = any(m.key not in cached for m in allowed)
                    log(f"plfw ablate: {'scoring' if fresh else 'crops of'} {label} "
                        f"({index}/{len(methods)})")
                    method = (bicubic(ab.scale) if model is None
                              else open_model(model, registry, device).image)
                todo = [m.label for m in allowed if m.key not in cached]
                started = time.monotonic()
                cached, shown = _score_method(method, ps, allowed, cached, spots, size)
                scores.crops.setdefault(run or BICUBIC, {}).update(
                    {(set_name, i): crop for i, crop in shown.items()})
                cache[skey] = cached
                if todo:  # a long scoring shows progress and keeps each set as it is done
                    log(f"plfw ablate: {label}: {set_name} scored ({len(ps)} images, "
                        f"{', '.join(todo)}; {time.monotonic() - started:.0f} s)")
                    folder.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(folder / SCORES_FILE, json.dumps(cache).encode())
            per_set[set_name] = {m.label: cached[m.key] for m in allowed}
        if want_crops:
            cropped_runs.add(run or BICUBIC)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / SCORES_FILE, json.dumps(cache).encode())
        scores.values[label] = per_set
    scores.crops["HR"] = {(s, i): pairs[s][i].hr[..., t: t + size, lf: lf + size]
                          for (s, i), (t, lf) in windows.items()}
    scores.picks = [(s, i, pairs[s][i].name) for s, i in picks]
    return pairs, metrics, scores, status
