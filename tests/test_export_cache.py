"""The export cache: a second export of the same inputs comes from the cache, not the
tool-chain; any changed input, or the cache turned off, exports again; a failure caches nothing."""
import pytest
import torch

from mobilenets.cost.latency import variant_model
from mobilenets.deploy import bench
from mobilenets.deploy.backends import Backend, installed_backends
from mobilenets.deploy.export_cache import CACHE_ENV, cache_dir
from mobilenets.deploy.onnx_export import ExportError

SHAPE = (3, 64, 64)


@pytest.fixture
def exports(monkeypatch, tmp_path):
    """The cache on in a temporary folder; counts the tool-chain's exports."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    calls = []
    real = Backend.export

    def export(self, model, path, *args, **kwargs):
        calls.append(self.name)
        return real(self, model, path, *args, **kwargs)

    monkeypatch.setattr(Backend, "export", export)
    return calls


def model(seed=0):
    m = variant_model("mobilenet_v1_0.25_128", meta=False)
    if seed:
        torch.manual_seed(seed)
        with torch.no_grad():
            m.classifier.weight.normal_()
    return m


def test_a_second_export_comes_from_the_cache(exports, tmp_path):
    pytest.importorskip("onnxruntime")
    first = bench.export_backend("onnx", model(), SHAPE, tmp_path / "a")
    second = bench.export_backend("onnx", model(), SHAPE, tmp_path / "b")
    assert exports == ["onnx"]
    assert second != first and open(second, "rb").read() == open(first, "rb").read()
    assert cache_dir() == tmp_path / "cache"
    assert len(list((tmp_path / "cache" / "exports").iterdir())) == 1
    # What was copied out runs and gives the model's logits.
    prepared = bench.load_backend("onnx", model(), SHAPE, second, ort_spinning=False)
    x = torch.randn(1, *SHAPE)
    torch.testing.assert_close(prepared.run(x), model()(x), atol=1e-4, rtol=1e-4)


def test_any_changed_input_exports_again(exports, tmp_path):
    pytest.importorskip("onnxruntime")
    bench.export_backend("onnx", model(), SHAPE, tmp_path / "a")
    bench.export_backend("onnx", model(seed=1), SHAPE, tmp_path / "b")  # other weights
    bench.export_backend("onnx", model(), (3, 96, 96), tmp_path / "c")  # other shape
    assert exports == ["onnx"] * 3


@pytest.mark.parametrize("value", ["off", ""])
def test_the_cache_turned_off_exports_every_time(exports, monkeypatch, tmp_path, value):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv(CACHE_ENV, value)
    assert cache_dir() is None
    bench.export_backend("onnx", model(), SHAPE, tmp_path / "a")
    bench.export_backend("onnx", model(), SHAPE, tmp_path / "b")
    assert exports == ["onnx", "onnx"]
    assert not (tmp_path / "cache").exists()


def test_a_failed_export_caches_nothing(exports, monkeypatch, tmp_path):
    def fail(self, model, path, *args, **kwargs):
        path.write_bytes(b"half a file")
        raise ExportError("the tool-chain failed (test)")

    monkeypatch.setattr(Backend, "export", fail)
    with pytest.raises(ExportError):
        bench.export_backend("onnx", model(), SHAPE, tmp_path / "a")
    assert list((tmp_path / "cache" / "exports").iterdir()) == []
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_a_file_group_comes_back_whole(exports, tmp_path):
    # OpenVINO writes an .xml and its .bin, as links into a hidden store (fileio.atomic_files).
    if "openvino" not in installed_backends():
        pytest.skip("openvino is not installed")
    bench.export_backend("openvino", model(), SHAPE, tmp_path / "a")
    path = bench.export_backend("openvino", model(), SHAPE, tmp_path / "b")
    assert exports == ["openvino"]
    prepared = bench.load_backend("openvino", model(), SHAPE, path)
    x = torch.randn(1, *SHAPE)
    torch.testing.assert_close(prepared.run(x), model()(x), atol=1e-3, rtol=1e-3)


def test_cached_jobs_start_no_export_worker(exports, monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    import concurrent.futures

    jobs = [("onnx", model(), SHAPE, tmp_path / "a"),
            ("onnx", model(seed=1), SHAPE, tmp_path / "b")]
    first = bench.export_backends(jobs, workers=1)

    def no_pool(*args, **kwargs):
        raise AssertionError("a worker process was started for files in the cache")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_pool)
    again = [(b, m, s, tmp_path / f"{w.name}2") for b, m, s, w in jobs]
    second = bench.export_backends(again, workers=2)
    assert exports == ["onnx", "onnx"]
    assert [open(f, "rb").read() for f in second] == [open(f, "rb").read() for f in first]
