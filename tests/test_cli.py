"""The command line: output formats and clear errors for bad input."""
import json
import subprocess
import sys

import pytest

from mobilenets.cli import main, parse_resolution


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_profile_json_by_name(capsys):
    code, out, _ = run(capsys, "profile", "--model", "mobilenet_v1_0.5_160", "--format", "json")
    data = json.loads(out)
    assert code == 0 and round(data["totals"]["madds"] / 1e6) == 77
    assert data["input_size"] == [3, 160, 160] and len(data["layers"]) == 29


def test_profile_by_width_and_nonsquare_resolution(capsys, tmp_path):
    out_file = tmp_path / "p.csv"
    code, _, _ = run(capsys, "profile", "--width-mult", "0.25", "--resolution", "128x96",
                     "--format", "csv", "--output", str(out_file))
    lines = out_file.read_text().splitlines()
    assert code == 0 and lines[0].startswith("name,type_stride") and "128 x 96 x 3" in lines[1]


@pytest.mark.parametrize("argv, message", [
    (["profile", "--width-mult", "0"], "width_mult"),
    (["profile", "--resolution", "31"], "--resolution"),
    (["profile", "--resolution", "abc"], "--resolution"),
    (["profile", "--model", "mobilenet_v1_1.0_255"], "did you mean"),
    (["models", "--pattern", "resnet*"], "--pattern"),
    (["paper-tables", "--table", "11"], "--table"),
    (["convert", "/nonexistent/weights.h5", "/tmp/out.safetensors"], "/nonexistent/weights.h5"),
])
def test_bad_input_is_one_clear_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_parse_resolution():
    assert parse_resolution("224") == (224, 224) and parse_resolution("160x128") == (160, 128)


def test_paper_tables_and_models(capsys):
    code, out, _ = run(capsys, "paper-tables", "--table", "3", "--table", "7", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and {r["table"] for r in rows} == {"3", "7"} and len(rows) == 16
    code, out, _ = run(capsys, "models", "--pattern", "*0.25*", "--format", "csv")
    assert code == 0 and len(out.strip().splitlines()) == 1 + 4


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "mobilenets", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "paper-tables" in proc.stdout
