"""Config loading and the CLI: one-line errors with exit code 2, --help, dotted overrides, and the
resolved config in the run directory and in checkpoints."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import tiny_config

from plfw import cli
from plfw.core.config import check_phase_name, load_config, to_dict
from plfw.core.errors import UserError
from plfw.core.plugins import load_plugins
from plfw.storage.checkpoint import CheckpointDir

REPO = Path(__file__).resolve().parents[1]
SWITCHES = ("PLFW_DISABLE_PLUGIN_AUTOLOAD", "PLFW_BLOCK_PLUGINS", "PLFW_PLUGINS")


def run_plfw(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    return subprocess.run([sys.executable, "-m", "plfw", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


TINY = {
    "generator": {"name": "srresnet", "blocks": 1, "channels": 8},
    "data": {"train": {"name": "hr_folder", "root": str(REPO / "assets/photos/train"),
                       "crop": 32, "max_images": 2},
             "batch_size": 2},
    "train": {"device": "cpu", "log_every": 1, "checkpoint_every": 1},
    "phases": {"pretrain": {"steps": 2, "losses": {"pixel": {"name": "mse"}}}},
    "metrics": ["psnr_y", "ssim_y"],
}


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A two-step built-in training config (srresnet, 32x32 crops of two shipped photos)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------ one-line errors

CONFIG_ERRORS = [
    ("train.log_evry=5", "unknown config key 'train.log_evry' (did you mean: log_every"),
    ("trian.device=cpu", "unknown config key 'trian' (did you mean: train"),
    ("phases.pretrain.stesp=3", "unknown config key 'phases.pretrain.stesp' (did you mean: "
                                "steps"),
    ("train.log_every=often", "train.log_every: Value 'often'"),
    ("phases.pretrain.lr=fast", "phases.pretrain.lr: Value 'fast'"),
    ("scale=5", "scale must be 2, 3, 4 or 8"),
    ("metrics.7=psnr_y", "'7' is not a valid index into a list of 2 items"),
    ("phases.pretrain.milestones.0=3", "phases.pretrain.milestones: expected a list"),
    ("phases=[1]", "phases: expected a mapping"),
    ("phases", "not of the form key=value"),
    # issue 36: a phase-name typo no longer adds a phase; values training cannot use
    ("phases.pretrian.steps=2", "override 'phases.pretrian.steps=2': the config has no phase "
                                "'pretrian' (did you mean: pretrain?); a new phase is set whole: "
                                "phases.pretrian={steps: ..., ...}"),
    ("phases.pretrain.steps=-5", "phases.pretrain.steps: expected a number of steps >= 0"),
    ("train.ema=1.5", "train.ema: expected a decay in [0, 1)"),
    ("train.ema=-0.1", "train.ema: expected a decay in [0, 1)"),
    ("phases.pretrain.gamma=.nan", "phases.pretrain.gamma: expected a finite number >= 0, "
                                   "got nan"),
    ("phases.pretrain.gamma=-0.5", "phases.pretrain.gamma: expected a finite number >= 0"),
    ("phases.pretrain.lr=1e309", "phases.pretrain.lr: expected a finite number >= 0, got inf"),
    ("phases.pretrain.lr=-1e-4", "phases.pretrain.lr: expected a finite number >= 0"),
    ("phases.pretrain.d_lr=.inf", "phases.pretrain.d_lr: expected a finite number >= 0"),
    ("phases.pretrain.milestones=[-1]", "phases.pretrain.milestones: expected phase steps >= 0"),
]

PLUGIN_ERRORS = [
    ("generator.name=srresnt", "unknown generator 'srresnt' (did you mean: srresnet"),
    ("phases.pretrain.losses.pixel.name=mes", "unknown loss 'mes' (did you mean: mse"),
    ("generator.blokcs=2", "unknown parameter 'blokcs' for generator 'srresnet' "
                           "(did you mean: blocks"),
    ("generator.channels=wide", "bad parameter for generator 'srresnet'"),
]


def assert_one_line_error(proc: subprocess.CompletedProcess, expected: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("plfw: error: ")
    assert expected in lines[0]


@pytest.mark.parametrize(("override", "expected"), CONFIG_ERRORS + PLUGIN_ERRORS,
                         ids=[o for o, _ in CONFIG_ERRORS + PLUGIN_ERRORS])
def test_override_mistakes_are_one_line_errors(tiny: Path, tmp_path: Path, override: str,
                                               expected: str) -> None:
    proc = run_plfw("train", str(tiny), override, f"run_dir={tmp_path / 'run'}")
    assert_one_line_error(proc, expected)


def test_file_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    cases = [
        (tmp_path / "nope.yaml", "config file not found"),
        (write(tmp_path / "bad.yaml", "phases: [1, 2\n"), "not valid YAML"),
        (write(tmp_path / "list.yaml", "- 1\n- 2\n"), "the top level must be a mapping"),
        (write(tmp_path / "a.yaml", "extends: b.yaml\n"), "loops back to itself"),
        (write(tmp_path / "top.yaml", "generater: srresnet\n"),
         "unknown config key 'generater' (did you mean: generator"),
        (write(tmp_path / "nophase.yaml", "generator: srresnet\ndata: {train: x}\n"),
         "defines no phases"),
    ]
    for path, expected in cases:
        assert_one_line_error(run_plfw("train", str(path)), expected)


def test_resume_of_a_non_run_directory_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(run_plfw("resume", str(tmp_path)), "not a plfw run directory")


# ------------------------------------------------------------------ phase names (issue 36)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_phase_name_cannot_write_outside_the_run_directory(tmp_path: Path) -> None:
    """A phase named '../x' or '/abs/victim' (in a config, or in the config.yaml of a run
    handed over to be resumed) is refused in one line before anything is written; the victim
    file stays as it was and nothing appears outside the run directory."""
    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"precious")
    phase = TINY["phases"]["pretrain"]
    for bad in ("../x", "../../victim", str(tmp_path / "victim"), ".hidden", "a/b", ""):
        data = {**TINY, "phases": {bad: phase}, "run_dir": str(tmp_path / "run" / "r")}
        path = write(tmp_path / "bad.yaml", yaml.safe_dump(data))
        before = _files(tmp_path)
        proc = run_plfw("train", str(path), "--quiet")
        assert_one_line_error(proc, f"phases: phase name {bad!r} is not allowed")
        assert "rename it, e.g. to" in proc.stderr
        assert _files(tmp_path) == before, bad
    # a run directory whose config.yaml was edited to carry such a phase, then resumed
    run = tmp_path / "handed"
    ok = write(tmp_path / "ok.yaml", yaml.safe_dump({**TINY, "run_dir": str(run)}))
    assert run_plfw("train", str(ok), "--quiet").returncode == 0
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("  pretrain:", f"  {tmp_path / 'victim'}:"))
    before = _files(tmp_path)
    proc = run_plfw("resume", str(run), "--quiet")
    assert_one_line_error(proc, f"phase name {str(tmp_path / 'victim')!r} is not allowed")
    assert _files(tmp_path) == before and victim.read_bytes() == b"precious"
    with pytest.raises(UserError, match=r"phase name '\.\./x'"):
        check_phase_name("../x")
    for good in ("srresnet", "SRGAN-v2", "phase_1.5", "0"):
        check_phase_name(good)


# ------------------------------------------------------------------ help


def subcommands() -> list[str]:
    parser = cli.build_parser(load_plugins())
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return sorted(action.choices)


def test_help_works_for_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    names = subcommands()
    assert {"train", "resume", "eval", "upscale", "plugins"} <= set(names)
    for name in ["", *names]:
        with pytest.raises(SystemExit) as info:
            cli.main([name, "--help"] if name else ["--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: plfw {name}".rstrip()), name


def test_help_through_python_m() -> None:
    proc = run_plfw("train", "--help")
    assert proc.returncode == 0 and "KEY=VALUE" in proc.stdout


# ------------------------------------------------------------------ overrides and extends


def test_dotted_overrides_reach_every_level(tiny: Path) -> None:
    cfg = load_config(tiny, [
        "phases.pretrain.steps=7",
        "phases.pretrain.lr=3.0e-4",
        "phases.pretrain.betas=[0.5, 0.9]",
        "phases.pretrain.losses.pixel.name=l1",
        "phases.finetune={steps: 1}",  # a new phase is set whole, added after the others
        "data.train.crop=48",
        "generator.channels=16",
        "metrics.0=ssim_y",
        "train.log_every=3",
        "name=tuned",
    ])
    pre = cfg.phases["pretrain"]
    assert (pre.steps, pre.lr, pre.betas) == (7, 3.0e-4, [0.5, 0.9])
    assert pre.losses == {"pixel": {"name": "l1"}}
    assert list(cfg.phases) == ["pretrain", "finetune"] and cfg.phases["finetune"].steps == 1
    assert cfg.data.train["crop"] == 48 and cfg.generator["channels"] == 16
    assert cfg.metrics == ["ssim_y", "ssim_y"] and cfg.train.log_every == 3
    assert (cfg.name, cfg.run_dir) == ("tuned", str(Path("runs") / "tuned"))


def test_null_override_removes_a_phase(tiny: Path) -> None:
    cfg = load_config(tiny, ["phases.finetune={steps: 1}", "phases.pretrain=null"])
    assert list(cfg.phases) == ["finetune"]
    with pytest.raises(UserError, match="no phase 'pretrain'"):  # removed: no dotted key
        load_config(tiny, ["phases.pretrain=null", "phases.pretrain.steps=3"])


def test_a_dotted_override_never_adds_a_phase(tiny: Path) -> None:
    """A typo in a phase's name used to add a phase with default settings (and exit 0); a new
    phase is set whole, and a whole mapping still needs the required keys."""
    with pytest.raises(UserError, match=r"no phase 'pretrian' \(did you mean: pretrain\?\)"):
        load_config(tiny, ["phases.pretrian.steps=2"])
    with pytest.raises(UserError, match="missing required key.*phases.extra.steps"):
        load_config(tiny, ["phases.extra={lr: 0.01}"])
    cfg = load_config(tiny, ["phases.extra={steps: 2}", "phases.extra.lr=0.01"])
    assert (cfg.phases["extra"].steps, cfg.phases["extra"].lr) == (2, 0.01)


def test_a_diverging_run_exits_2_in_one_line(tiny: Path, tmp_path: Path) -> None:
    """A learning rate that sends the weights to inf on the first update: no model is written
    from them and the run stops with exit 2 (it exited 0 with NaN weights and PSNR nan)."""
    run = tmp_path / "run"
    proc = run_plfw("train", str(tiny), "phases.pretrain.lr=1e39", f"run_dir={run}", "--quiet")
    assert_one_line_error(proc, "training diverged: the generator's weights are non-finite at "
                                "step 1 (no checkpoint written)")
    assert "the last good checkpoint is none" in proc.stderr
    assert not (run / "models").exists() and CheckpointDir(run / "checkpoints").steps() == []


def test_extends_merges_deeply_and_overrides_win(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", yaml.safe_dump(TINY))
    child = write(tmp_path / "child.yaml", "extends: base.yaml\n"
                  "generator: {blocks: 2}\n"
                  "phases: {pretrain: {lr: 0.002}}\n")
    cfg = load_config(child, ["generator.channels=4"])
    assert cfg.generator == {"name": "srresnet", "blocks": 2, "channels": 4}
    assert (cfg.phases["pretrain"].steps, cfg.phases["pretrain"].lr) == (2, 0.002)
    assert cfg.name == "child"


def test_unknown_key_is_reported_in_process(tiny: Path) -> None:
    with pytest.raises(UserError, match=r"unknown config key 'data.batchsize' \(did you mean: "
                                        r"batch_size"):
        load_config(tiny, ["data.batchsize=4"])


# ------------------------------------------------------------------ resolved config is saved


def test_resolved_config_lands_in_run_dir_and_checkpoints(tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = ["phases.pretrain.lr=0.0005", "generator.channels=6", f"run_dir={run}"]
    proc = run_plfw("train", str(tiny), *overrides, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]

    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written == to_dict(load_config(tiny, overrides))
    assert written["phases"]["pretrain"]["lr"] == 0.0005
    assert written["generator"]["channels"] == 6
    assert written["name"] == "tiny" and written["run_dir"] == str(run)

    for step in (1, 2):
        state = torch.load(run / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)
        assert state["config"] == written

    # The written config reproduces the run: `plfw resume` reads it back.
    assert load_config(run / "config.yaml") == load_config(tiny, overrides)


# ------------------------------------ counts, seed, extends, a read-only run_dir (issue 36)


@pytest.mark.parametrize(("override", "key"), [
    ("train.checkpoint_every=0", "train.checkpoint_every"),
    ("train.log_every=0", "train.log_every"), ("train.val_every=0", "train.val_every"),
    ("train.keep_last=0", "train.keep_last"), ("train.max_bad_steps=0", "train.max_bad_steps"),
    ("data.batch_size=0", "data.batch_size"), ("data.workers=-1", "data.workers"),
    ("seed=100000000000000000000", "seed"), ("seed=-1", "seed"),
    ("train.grad_clip=-1", "train.grad_clip"), ("train.explode_norm=.nan", "train.explode_norm"),
])
def test_counts_and_seeds_training_cannot_use_are_one_line_errors(
        tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str,
        key: str) -> None:
    """They were a ZeroDivisionError / ValueError / OverflowError traceback mid-run, or ran."""
    code = cli.main(["train", str(tiny), override, f"run_dir={tmp_path / 'run'}", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"plfw: error: {key}: expected"), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["extends: 5\n", "extends: [base.yaml, 7]\n",
                                  "extends: {base: 1}\n", "extends: ''\n"])
def test_extends_must_name_config_files(tmp_path: Path, text: str) -> None:
    with pytest.raises(UserError, match="'extends' must be a config file path or a list") as err:
        load_config(write(tmp_path / "child.yaml", text))
    assert "\n" not in str(err.value) and "child.yaml" in str(err.value)


def test_an_existing_read_only_run_dir_is_a_one_line_error(
        tiny: Path, read_only_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["train", str(tiny), f"run_dir={read_only_dir}", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert str(read_only_dir) in err and "not writable" in err and "run_dir=" in err


# ------------------------------------------------------- a newcomer's first day (issue 36)


def _popen_plfw(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    return subprocess.Popen([sys.executable, "-m", "plfw", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_prints_the_command_that_continues(tmp_path: Path) -> None:
    """SIGINT during training ends with one line naming `plfw resume <run_dir>` (it used to be
    `plfw: interrupted` and nothing more)."""
    config = tiny_config(tmp_path, gan=False)
    run = tmp_path / "run"
    proc = _popen_plfw("train", str(config), "--quiet", "phases.srresnet.steps=100000")
    try:
        deadline = time.monotonic() + 240
        while (CheckpointDir(run / "checkpoints").latest() is None and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        f"plfw: interrupted; continue from the last checkpoint with: "
        f"plfw resume {shlex.quote(str(run))}")


def test_the_interrupt_line_for_ablate_and_before_the_first_checkpoint(tmp_path: Path) -> None:
    parser = cli.build_parser(load_plugins())
    argv = ["ablate", "study dir/ablation.yaml", "--seed", "2"]
    line = cli._interrupted(parser.parse_args(argv), argv)
    assert line.endswith(": plfw ablate 'study dir/ablation.yaml' --seed 2"), line
    assert "run the same command again" in line
    # train stopped before its first checkpoint: again, with --overwrite once it wrote files
    argv = ["train", "my.yaml", "--quiet"]
    args = parser.parse_args(argv)
    args.interrupt_run_dir = str(tmp_path / "run")
    assert cli._interrupted(args, argv).endswith("start again with: plfw train my.yaml --quiet")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("seed: 1\n")
    assert cli._interrupted(args, argv).endswith(
        "start again with: plfw train my.yaml --quiet --overwrite")
    argv = ["eval", "--sr", "a", "--hr", "b"]
    assert cli._interrupted(parser.parse_args(argv), argv) == "plfw: interrupted"


def test_plfw_notes_are_one_line_without_a_source_line(tmp_path: Path) -> None:
    """A dataset that skips a bad file says so in one `plfw: warning:` line, not Python's
    `file:line: UserWarning:` followed by the source line of the warnings.warn call."""
    config = tiny_config(tmp_path, gan=False)
    (tmp_path / "train" / "broken.png").write_bytes(b"not a png")
    proc = run_plfw("train", str(config), "--quiet", "phases.srresnet.steps=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert [line for line in lines if "broken.png" in line] == [
        line for line in lines if line.startswith("plfw: warning: hr_folder: skipped 1 of 5 "
                                                  "files")]
    assert len(lines) == 1 and "UserWarning" not in proc.stderr, proc.stderr
    assert "warnings.warn" not in proc.stderr


def test_a_child_config_can_replace_a_mapping_instead_of_merging(tmp_path: Path) -> None:
    """`extends` merges mappings, so a child's `layers: {relu2_2: 1}` kept the base's relu5_4
    beside it; `_replace: true` inside the child's mapping takes it as it is."""
    base = {**TINY, "phases": {"gan": {"steps": 1, "losses": {"content": {
        "name": "perceptual", "layers": {"relu5_4": 1.0}, "feature_scale": 0.0784}}}}}
    write(tmp_path / "base.yaml", yaml.safe_dump(base))
    merged = write(tmp_path / "merged.yaml", "extends: base.yaml\nphases: {gan: {losses: "
                   "{content: {layers: {relu2_2: 0.5}}}}}\n")
    replaced = write(tmp_path / "replaced.yaml", "extends: base.yaml\nphases: {gan: {losses: "
                     "{content: {layers: {_replace: true, relu2_2: 0.5}}}}}\n")
    content = load_config(merged).phases["gan"].losses["content"]
    assert content["layers"] == {"relu5_4": 1.0, "relu2_2": 0.5}
    content = load_config(replaced).phases["gan"].losses["content"]
    assert content["layers"] == {"relu2_2": 0.5} and content["feature_scale"] == 0.0784
    assert "_replace" not in to_dict(load_config(replaced, ["seed=2"])).__repr__()
    # in a file without extends, or set by an override, there is nothing to merge: dropped
    assert load_config(tmp_path / "base.yaml", [
        "phases.gan.losses.content.layers={_replace: true, relu1_2: 1}"]).phases[
            "gan"].losses["content"]["layers"] == {"relu1_2": 1}
    bad = write(tmp_path / "bad.yaml", "extends: base.yaml\nphases: {gan: {losses: "
                "{content: {layers: {_replace: maybe, relu2_2: 0.5}}}}}\n")
    with pytest.raises(UserError, match=r"bad\.yaml: _replace: expected true or false"):
        load_config(bad)
