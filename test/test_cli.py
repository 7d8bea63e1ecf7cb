"""defm-ros: --help everywhere, exit codes, info, and the demo (the main job) on real frames."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from defm_ros.cli import VERBS, main


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    assert "usage: defm-ros " + verb in capsys.readouterr().out


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "defm_ros.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(v in out.stdout for v in VERBS) and "exit codes" in out.stdout


def test_help_does_not_import_torch():
    """--help answers at once: torch (2.4 s) is imported only by a verb that runs a model."""
    code = "import sys\nfrom defm_ros.cli import build_parser\nbuild_parser()\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize(("argv", "says"), [
    (["info", "defm_resnet18", "--size", "abc"], "size must be N or HxW"),
    (["info", "defm_resnet18", "--size", "10"], "14 <= H, W <= 4096"),
    (["info", "defm_resnet18", "--size", "0"], "14 <= H, W <= 4096"),
    (["demo", "--size", "3x"], "size must be N or HxW"),
    (["demo", "--device", "gpu"], "cpu, cuda or cuda:N"),
    (["demo", "--limit", "-1"], "expected a count >= 0"),
    (["demo", "--unit", "inch"], "invalid choice: 'inch'"),
    (["export", "--precision", "bf16"], "invalid choice: 'bf16'"),
    (["export", "--batch", "0"], "expected a positive integer"),
    (["extract", "x.mcap", "--out", "o", "--dtype", "float64"], "invalid choice"),
    (["bench", "-b", "tensorrt"], "backend must be one of"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_are_one_line_with_exit_2(argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and says in err, err
    assert err.count("\n") == 1 and err.startswith("defm-ros") and "--help" in err and "Traceback" not in err


def test_info_lists_every_model_with_its_licence_and_hub_id(capsys):
    from defm_ros.models import MODELS, REFINERS

    assert main(["info"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    for spec in [*MODELS.values(), *REFINERS.values()]:
        row = rows[spec.name]
        assert spec.license.split(" (")[0] in row and f" {spec.hub_repo} " in row, row
    assert sum(name.startswith("defm_") for name in rows) == 12
    assert all("Apache-2.0" in rows[n] and "leggedrobotics/defm" in rows[n] for n in rows if n.startswith("defm_"))
    theia = [row for name, row in rows.items() if name.startswith("theia_")]
    assert len(theia) == 6 and all("color" in row and "non-commercial research only" in row for row in theia)
    for size in ("tiny", "small", "base"):
        assert f"theaiinstitute/theia-{size}-patch16-224-cdiv" in rows[f"theia_{size}"]
        assert f"theaiinstitute/theia-{size}-patch16-224-cddsv" in rows[f"theia_{size}_cddsv"]
    assert "robbyant/lingbot-depth-postrain-dc-vitl14" in rows["lingbot_depth_dc_vitl14"]


def test_info_json_and_unknown_model(capsys):
    assert main(["info", "defm_regnet_y_400mf", "--size", "200x300"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "defm_regnet_y_400mf" and info["padded_size"] == [224, 320]
    assert info["dense_channels"] == 64 and info["random_weights"] is True
    assert main(["info", "defm_resnet99"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_demo_writes_pca_images_and_says_weights_are_random(shared_data, tmp_path, capsys):
    frames = [shared_data / "defm_examples" / "ladders", shared_data / "rgbd_examples" / "2"]
    code = main(["demo", *map(str, frames), "--out", str(tmp_path), "--limit", "3", "--model", "defm_regnet_y_400mf"])
    out = capsys.readouterr().out
    assert code == 0
    assert "NO DeFM WEIGHTS AVAILABLE" in out and "huggingface-cli download" in out
    pngs = sorted(tmp_path.glob("*_pca.png"))
    assert len(pngs) == 3
    w, h = Image.open(pngs[0]).size
    assert (w, h) == (2 * 848, 480)  # depth beside its PCA view, at the frame's size
    assert "median per frame" in out


def test_demo_without_inputs_fails_clearly(tmp_path, capsys):
    assert main(["demo", str(tmp_path)]) == 2
    assert "no depth PNGs" in capsys.readouterr().err
    assert main(["demo", str(tmp_path / "nonexistent.png")]) == 2
    assert "nonexistent.png: no such file or folder" in capsys.readouterr().err


def test_demo_refuses_colour_before_loading_a_model(shared_data, tmp_path, capsys, monkeypatch):
    import defm_ros.encoder

    monkeypatch.setattr(defm_ros.encoder, "Encoder", lambda *a, **k: pytest.fail("the model was loaded first"))
    assert main(["demo", str(shared_data / "rgbd_examples" / "0" / "rgb.png"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a colour image" in err and err.count("\n") == 1


def test_demo_says_the_unit_and_mode_it_assumed(shared_data, tmp_path, capsys):
    ladders = shared_data / "defm_examples" / "ladders"
    assert main(["demo", str(ladders), "--out", str(tmp_path), "--limit", "1", "--weights", "random",
                 "--model", "defm_regnet_y_400mf", "--size", "64"]) == 0
    assert "metric, cm (8-bit image)" in capsys.readouterr().out
    assert main(["demo", str(ladders), "--out", str(tmp_path), "--limit", "1", "--weights", "random",
                 "--model", "defm_regnet_y_400mf", "--size", "64", "--unit", "mm", "--mode", "metric"]) == 0
    assert "metric, mm (--unit)" in capsys.readouterr().out


@pytest.mark.parametrize(("content", "says"), [(None, "does not exist"), (b"", "is empty (0 bytes)"),
                                               (b"PK\x03\x04truncated", "truncated or corrupt")])
def test_bad_checkpoints_are_input_errors_in_the_cli_syntax(shared_data, tmp_path, capsys, content, says):
    path = tmp_path / "defm_resnet18.pth"
    if content is not None:
        path.write_bytes(content)
    frame = shared_data / "rgbd_examples" / "0" / "raw_depth.png"
    assert main(["demo", str(frame), "--weights", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "weights:=" not in err
    if content is None:
        assert "--weights FILE" in err


def test_info_of_a_checkpoint_file_says_how(capsys):
    assert main(["info", "models/defm_resnet18.pth"]) == 2
    err = capsys.readouterr().err
    assert "is a checkpoint" in err and "defm-ros info MODEL --weights models/defm_resnet18.pth" in err


def test_a_closed_pipe_ends_quietly():
    import os

    read, write = os.pipe()
    os.close(read)  # as `defm-ros info | head` once head has gone
    out = subprocess.run([sys.executable, "-m", "defm_ros.cli", "info"], stdout=write, stderr=subprocess.PIPE,
                         text=True)
    os.close(write)
    assert out.returncode == 141 and out.stderr == ""


def test_bench_checks_its_json_path_first(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--json", str(tmp_path / "missing" / "r.json")])
    assert exc.value.code == 2 and "no such folder" in capsys.readouterr().err


def test_bench_has_options_for_every_backend():
    from defm_ros.cli.bench import BENCH_OPTIONS
    from defm_ros.config import BACKEND_OPTIONS, BACKENDS

    assert tuple(BENCH_OPTIONS) == BACKENDS
    assert all(o in BACKEND_OPTIONS[b] or o == "nospin" for b, opts in BENCH_OPTIONS.items() for o in opts)


def test_demo_draws_no_progress_bar_into_a_log(shared_data, tmp_path, capsys):
    assert main(["demo", str(shared_data / "rgbd_examples" / "0" / "raw_depth.png"), "--out", str(tmp_path),
                 "--weights", "random", "--model", "defm_regnet_y_400mf", "--size", "64"]) == 0
    captured = capsys.readouterr()
    assert "median per frame" in captured.out and "%|" not in captured.err and "\r" not in captured.err
