"""What commands print and draw: tables that fit 100 columns (every column with --wide, every
field in CSV and JSON), the registry's model names everywhere, the activation-memory headline the
docs quote, pictures (predict, training curves) and TensorBoard logs."""
import json
from pathlib import Path

import pytest
from helpers import run_cli_captured

import mobilenets as M
from mobilenets.cli import main
from mobilenets.tables import TABLE_WIDTH, render_table

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"

ROWS = [{"name": f"mobilenet_v1_{a}_224", "backend": "onnx", "empty": None, "latency_ms": 1.25 * i,
         "note": "a long explanation of why this figure differs from the paper's, with the "
                 "evidence and the page it is on", **{f"metric_{k}": 123456.789 for k in range(6)}}
        for i, a in enumerate((1.0, 0.75, 0.5))]


def widest(text: str) -> int:
    return max(map(len, text.splitlines()))


def test_render_table_fits_the_width_and_keeps_every_value():
    text = render_table(ROWS)
    assert widest(text) <= TABLE_WIDTH
    assert "empty" not in text  # a column empty in every row is dropped
    blocks = text.split("\n\n")
    assert len(blocks) > 1 and all(b.startswith("name") for b in blocks)  # led by the first column
    for row in ROWS:  # names are never wrapped; every number is printed
        assert text.count(row["name"]) == len(blocks)
        assert all(str(row[f"metric_{k}"]) in text for k in range(6))
    assert "evidence and the page" in " ".join(text.split())  # prose wraps, words stay whole


def test_render_table_wide_columns_csv_and_json():
    wide = render_table(ROWS, width=None)
    assert len(wide.splitlines()) == 2 + len(ROWS) and "empty" in wide.splitlines()[0]
    narrow = render_table(ROWS, columns=("name", "latency_ms"), headers={"latency_ms": "ms"})
    assert narrow.splitlines()[0].split() == ["name", "ms"]
    assert render_table(ROWS, "csv", columns=("name",)).splitlines()[0].count(",") == len(ROWS[0]) - 1
    assert json.loads(render_table(ROWS, "json", columns=("name",))) == ROWS
    with pytest.raises(ValueError, match="--format"):
        render_table(ROWS, "xml")


def test_render_table_markdown():
    rows = [{"name": "a|b", "top1": 70.6, "note": None}, {"name": "c", "top1": 9, "note": "x"}]
    text = render_table(rows, "markdown", headers={"top1": "top-1 %"})
    assert text.splitlines() == ["| name | top-1 % | note |", "|---|---|---|",
                                 "| a\\|b | 70.6 |  |", "| c | 9 | x |"]
    assert render_table([], "markdown") == ""


@pytest.mark.parametrize("argv", [
    ["models"], ["profile"], ["profile", "--model", "mobilenet_v1_1.0_224", "--memory"],
    ["profile", "--model", "mobilenet_v2_1.0_224", "--memory", "layers"], ["paper-tables"],
    ["segment", "cost", "--resolution", "129"], ["detect", "profile"],
])
def test_commands_print_at_most_100_columns_and_wide_prints_more(capsys, argv):
    assert main(argv) == 0
    narrow = capsys.readouterr().out
    assert widest(narrow) <= TABLE_WIDTH
    if argv[0] == "paper-tables" or "--memory" in argv:
        assert main(argv + ["--wide"]) == 0
        assert widest(capsys.readouterr().out) > TABLE_WIDTH


def test_memory_headline_is_the_figure_the_docs_quote(capsys):
    """`profile --memory` headlines the maxima below 112x112, Table 3's figure, as
    docs/results/cost.md quotes them."""
    quoted = (ROOT / "docs" / "results" / "cost.md").read_text()
    for model, peak, largest in (("mobilenet_v1_1.0_224", "1,605.6", "802.8"),
                                 ("mobilenet_v2_1.0_224", "301.1", "150.5")):
        assert main(["profile", "--model", model, "--memory"]) == 0
        below = " ".join(capsys.readouterr().out.split("Below 112x112", 1)[1].split())
        assert f"peak live {peak} KB" in below and f"largest tensor {largest} KB" in below
        assert f"{largest} KB / {peak} KB" in " ".join(quoted.split())
    from mobilenets.cost.memory import inference_ops, trace_memory

    trace = trace_memory(M.create_model("mobilenet_v2_1.0_224"), (3, 224, 224), fuse=inference_ops())
    below = trace.to_dict()["below_stem"]
    assert below["largest_tensor_bytes"] == 56 * 56 * 24 * 2 and below["resolution"] == (112, 112)


def test_registry_names_at_any_size():
    from mobilenets.models.registry import config_name, variant_name

    assert variant_name("mobilenet_v1_1.0_224", resolution=64) == "mobilenet_v1_1.0_64"
    assert variant_name("mobilenetv1_100") == "mobilenet_v1_1.0_224"  # timm's name
    assert variant_name("mobilenet_v1_conv_224", resolution=32) == "mobilenet_v1_conv_32"
    assert config_name(M.create_model("mobilenet_v2_0.35_96").config) == "mobilenet_v2_0.35_96"
    assert all(variant_name(n) == n for n in M.list_models())  # the registered ones, unchanged


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One `train --preset smoke --tensorboard` run: its folder and what it printed (the tests
    below each check one thing it wrote or one command on its model)."""
    out = tmp_path_factory.mktemp("output") / "run"
    code, stdout, err = run_cli_captured("train", "--preset", "smoke", "--out", out,
                                         "--tensorboard")
    assert code == 0, err
    return out, stdout


@pytest.mark.needs_data
def test_train_prints_one_report_within_the_width(smoke_run):
    out, stdout = smoke_run
    assert stdout.count("confusion matrix") == 1
    assert widest("\n".join(x for x in stdout.splitlines() if str(out.parent) not in x)) <= TABLE_WIDTH
    assert (out / "eval_report.txt").read_text().strip() in stdout


@pytest.mark.needs_data
def test_train_draws_curves_and_logs_tensorboard(smoke_run):
    out, _ = smoke_run
    assert (out / "curves.png").read_bytes()[:8] == PNG
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))  # installed with set-up


@pytest.mark.needs_data
def test_predict_draws_the_top_k(smoke_run, capsys, tmp_path):
    out, _ = smoke_run
    image = ROOT / "docs" / "examples" / "bag.png"
    assert main(["predict", str(out / "model.safetensors"), str(image), "--top-k", "2",
                 "--output-dir", str(tmp_path / "pics"), "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert Path(row["picture"]) == tmp_path / "pics" / "bag_top2.png"
    assert Path(row["picture"]).read_bytes()[:8] == PNG


@pytest.mark.needs_data
def test_compare_names_the_model_at_its_input_size(smoke_run, capsys):
    out, _ = smoke_run
    assert main(["compare", str(out)]) == 0
    table = capsys.readouterr().out
    assert "mobilenet_v1_0.25_32" in table and "mobilenet_v1_0.25_128" not in table


@pytest.mark.needs_data
def test_bench_names_the_model_and_fills_the_peer_column(smoke_run, capsys):
    out, _ = smoke_run
    assert main(["bench", "--model-file", str(out / "model.safetensors"), "--backends",
                 "eager,timm", "--rounds", "1", "--batch", "2", "--no-memory", "--threads", "1"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("machine: ") and widest(table) <= TABLE_WIDTH
    rows = [line.split() for line in table.splitlines() if line.startswith("mobilenet_")]
    assert [r[:2] for r in rows] == [["mobilenet_v1_0.25_32", "eager"],
                                     ["mobilenet_v1_0.25_32", "timm"]]
    assert rows[1][-2] == "1.0"  # vs_peer: the peer column is filled


def test_plot_helpers_reject_bad_input(tmp_path):
    from mobilenets.engine.plots import plot_training_curves
    from mobilenets.tasks.classification.figures import plot_prediction

    with pytest.raises(ValueError, match="history is empty"):
        plot_training_curves([], tmp_path / "c.png")
    with pytest.raises(ValueError, match="equal length"):
        plot_prediction([[0]], ["a", "b"], [1.0], tmp_path / "p.png")
    path = plot_training_curves([{"epoch": 1, "step": 5, "train_loss": 2.0, "val_top1": 30.0},
                                 {"epoch": 2, "step": 10, "train_loss": 1.5, "val_top1": 45.0}],
                                tmp_path / "c.png")
    assert path.read_bytes()[:8] == PNG
