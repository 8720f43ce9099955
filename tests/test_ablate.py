"""plfw ablate: a two-run grid end to end, resumption, the report and file validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import tiny_config

from plfw.ablate import load_ablation, run_ablation, train_run, training_networks
from plfw.ablate_report import perceptual_distance
from plfw.cli import main
from plfw.errors import UserError

DISTANCE = [
    {"name": "vgg19", "weights": "none", "taps": ["relu1_2"]},
    {"name": "efficientnet_lite0", "weights": "none", "taps": ["1"]},
]


@pytest.fixture(autouse=True)
def _keep_threads() -> object:
    """The runs use one torch thread (quicker on a busy machine); restore it afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _ablation(tmp: Path, **changes: object) -> Path:
    tiny_config(tmp)
    data: dict = {
        "base": "tiny.yaml",
        "overrides": ["phases.srresnet.steps=2", "phases.srgan.steps=2", "train.threads=1"],
        "runs": {
            "mse": ["phases.srgan=null"],
            "gan": ["phases.srresnet=null", "phases.srgan.init={out}/mse/models/srresnet.pt"],
        },
        "eval": {"hr": str(tmp / "val")},
        "distance": DISTANCE,
        "report": {"crop": 16, "zoom": 2},
        "notes": "Two steps per run: this shows the plumbing, nothing about the networks.",
    }
    data.update(changes)
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_ablation_end_to_end_and_resume(tmp_path: Path) -> None:
    path = _ablation(tmp_path)
    out = tmp_path / "out"
    lines: list[str] = []
    report = run_ablation(path, out, device="cpu", log=lines.append)
    for run in ("mse", "gan"):
        state = json.loads((out / run / "ablate.json").read_text())
        assert state["finished"] and state["train_seconds"] > 0
        assert (out / run / "metrics.jsonl").is_file()
    assert (out / "gan" / "models" / "srgan.pt").is_file()
    assert not (out / "gan" / "models" / "srresnet.pt").exists()  # started from mse's model

    text = report.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["bicubic", "mse", "gan"]
    gan_row = rows[2]
    assert "(trained with it)" in gan_row  # gan trains against vgg19: not scored with it
    assert "(+ mse)" in gan_row
    assert "nothing about the networks" in text
    for png in ["crops_img00.png", "crops_img01.png", "loss_curves.png"]:
        assert (out / png).stat().st_size > 0
        assert f"({png})" in text

    scores = json.loads((out / "report.json").read_text())["runs"]
    assert scores["gan"]["trained_with"] == ["vgg19"]
    assert list(scores["gan"]["distance"]) == ["efficientnet_lite0 none [1]"]
    assert set(scores["mse"]["distance"]) == {"vgg19 none [relu1_2]",
                                              "efficientnet_lite0 none [1]"}

    # Second invocation: nothing retrains.
    ab, _ = load_ablation(path, out)
    mtime = (out / "mse" / "models" / "srresnet.pt").stat().st_mtime_ns
    lines.clear()
    assert [train_run(ab, run, log=lines.append) for run in ab.runs] == ["skipped"] * 2
    assert sum("finished earlier, skipped" in line for line in lines) == 2
    assert (out / "mse" / "models" / "srresnet.pt").stat().st_mtime_ns == mtime

    # A run cut short (checkpoints, no finished mark) resumes and its time adds up.
    state_file = out / "gan" / "ablate.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "finished": False}))
    assert train_run(ab, "gan", log=lines.append) == "resumed"
    after = json.loads(state_file.read_text())
    assert after["finished"] and after["train_seconds"] > state["train_seconds"]


def test_changed_config_is_refused(tmp_path: Path) -> None:
    from plfw.config import to_dict

    ab, out = load_ablation(_ablation(tmp_path), tmp_path / "out")
    (out / "mse").mkdir(parents=True)
    config = json.loads(json.dumps(to_dict(ab.configs["mse"])))
    config["train"]["threads"] = 7  # how a run executes may change between invocations
    state = {"config": config, "finished": True, "train_seconds": 1.0}
    (out / "mse" / "ablate.json").write_text(json.dumps(state))
    assert train_run(ab, "mse", log=lambda _: None) == "skipped"
    config["seed"] += 1  # what it learns may not
    (out / "mse" / "ablate.json").write_text(json.dumps({**state, "config": config}))
    with pytest.raises(UserError, match="changed since it was trained"):
        train_run(ab, "mse", log=lambda _: None)


@pytest.mark.parametrize(("changes", "message"), [
    ({"runs": {"a": ["phases.srresnet.stepz=3"]}}, r"run 'a': unknown config key "
                                                    r"'phases.srresnet.stepz'"),
    ({"base": "missing.yaml"}, "base config not found"),
    ({"runz": {}}, "unknown key 'runz'"),
    ({"runs": {"a": "phases.srgan=null"}}, "runs.a: expected a list"),
    ({"runs": {"a b": []}}, "run name"),
    ({"eval": {"hr": "x", "scal": 4}}, "eval: unknown key 'scal'"),
    ({"distance": [{"weights": "none"}]}, "distance must be a list"),
    ({"eval": {"hr": "x", "scale": "four"}}, "eval.scale must be 2, 3, 4 or 8"),
])
def test_bad_ablation_files(tmp_path: Path, changes: dict, message: str) -> None:
    path = _ablation(tmp_path, **changes)
    with pytest.raises(UserError, match=message):
        load_ablation(path)


def test_cli_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _ablation(tmp_path, base="nope.yaml")
    assert main(["ablate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("plfw: error:") and "\n" not in err


def test_training_networks_and_distance(tmp_path: Path) -> None:
    ab, _ = load_ablation(_ablation(tmp_path))
    assert training_networks(ab.configs["mse"]) == set()
    assert training_networks(ab.configs["gan"]) == {"vgg19"}

    import plfw

    net = plfw.build("feature_extractor", DISTANCE[0])
    x = torch.rand(3, 24, 24)
    assert perceptual_distance(net, x, x, 2) == pytest.approx(0.0, abs=1e-9)
    d = perceptual_distance(net, x, torch.rand(1, 24, 24), 2)  # gray HR is compared as RGB
    assert 0 < d <= 4


@pytest.mark.parametrize("name", ["paper_table1", "beyond_vgg", "cpu_quick"])
def test_shipped_ablations_load(name: str) -> None:
    repo = Path(__file__).resolve().parents[1]
    ab, out = load_ablation(repo / "configs" / "ablation" / f"{name}.yaml")
    assert out == Path("runs") / name
    first = next(iter(ab.configs.values()))
    assert list(first.phases) == ["srresnet"] and training_networks(first) == set()
    for run, cfg in list(ab.configs.items())[1:]:
        init = cfg.phases[list(cfg.phases)[-1]].init
        assert init is None or init.startswith(str(out)), run


def test_missing_matplotlib_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from plfw.ablate_report import _pyplot

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UserError, match="pip install 'plfw\\[report\\]'"):
        _pyplot()


def test_cli_single_run_reports_the_rest_unfinished(tmp_path: Path) -> None:
    path = _ablation(tmp_path)
    out = tmp_path / "out"
    assert main(["ablate", str(path), "--out", str(out), "--run", "mse", "--device", "cpu",
                 "--quiet"]) == 0
    rows = {line.split("|")[1].strip(): line for line in
            (out / "report.md").read_text().splitlines() if line.startswith("| ")}
    assert "not finished" in rows["gan"] and "not finished" not in rows["mse"]
    assert not (out / "gan").exists()
