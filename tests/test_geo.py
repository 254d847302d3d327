"""PlaNet geolocation (Table 11): distances, adaptive equal-area geocells, prediction, the
distance report, CSV input, the Fashion-MNIST-derived data and a tiny end-to-end run."""
import json
import math

import numpy as np
import pytest
import torch

from mobilenets.cli import main
from mobilenets.cost.profiler import profile_model
from mobilenets.models.mobilenet_v1 import MobileNetV1
from mobilenets.tasks.geo.cells import (EARTH_RADIUS_KM, GeocellConfig, Geocells, build_geocells,
                                        grid_index, haversine_km, predict_locations, to_latlon,
                                        to_xyz)
from mobilenets.tasks.geo.data import (CITIES, GeoDataConfig, derive_locations, offset_point,
                                       read_geo_csv)
from mobilenets.tasks.geo.evaluate import (TABLE11_SCALES, accuracy_at_km, geo_report, prior_probs,
                                           table11_rows)

R = EARTH_RADIUS_KM
CITY = {name: (lat, lon) for name, lat, lon in CITIES}


def _central_angle_km(lat1, lon1, lat2, lon2):
    """Reference: the angle between the two unit vectors by atan2(|a x b|, a . b)."""
    a, b = to_xyz(lat1, lon1), to_xyz(lat2, lon2)
    return R * math.atan2(np.linalg.norm(np.cross(a, b)), float(np.dot(a, b)))


@pytest.mark.parametrize("a, b, published_km", [
    ("London", "Paris", 343.5), ("New York", "Los Angeles", 3936.0), ("Sydney", "Tokyo", 7823.0),
    ("Cairo", "Cape Town", 7233.0)])
def test_haversine_known_city_distances(a, b, published_km):
    d = float(haversine_km(*CITY[a], *CITY[b]))
    assert d == pytest.approx(published_km, rel=5e-3)  # great-circle figures on a 6371 km sphere
    assert d == pytest.approx(_central_angle_km(*CITY[a], *CITY[b]), rel=1e-9)
    assert float(haversine_km(*CITY[b], *CITY[a])) == pytest.approx(d)


def test_haversine_exact_cases_and_broadcasting():
    assert float(haversine_km(0, 0, 0, 90)) == pytest.approx(math.pi * R / 2)
    assert float(haversine_km(0, 0, 0, 180)) == pytest.approx(math.pi * R)  # antipodes
    assert float(haversine_km(90, 0, -90, 0)) == pytest.approx(math.pi * R)
    assert float(haversine_km(10, 179.9, 10, -179.9)) < 25  # across the date line
    d = haversine_km(np.zeros(3), np.zeros(3), 0, [0, 1, 2])
    assert d.shape == (3,) and d[0] == 0 and d[2] == pytest.approx(2 * d[1])


def test_offset_point_lands_at_the_requested_distance():
    lat, lon = offset_point(np.full(4, 51.5), np.full(4, -0.13), [1, 15, 60, 3000],
                                np.array([0.0, 1.0, 2.5, 4.0]))
    np.testing.assert_allclose(haversine_km(51.5, -0.13, lat, lon), [1, 15, 60, 3000], rtol=1e-9)


def _clustered(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([CITY["Paris"], CITY["Tokyo"], CITY["Sydney"], (0.0, 179.9)])
    which = rng.choice(4, n, p=[0.5, 0.3, 0.15, 0.05])
    lat = np.clip(centres[which, 0] + rng.normal(0, 1.5, n), -90, 90)
    lon = (centres[which, 1] + rng.normal(0, 1.5, n) + 180) % 360 - 180
    lat[:30], lon[:30] = rng.uniform(-90, 90, 30), rng.uniform(-180, 180, 30)  # sparse strays
    return lat, lon


def test_geocells_partition_invariants():
    lat, lon = _clustered()
    cfg = GeocellConfig(max_photos=150, min_photos=10, max_level=12)
    cells = build_geocells(lat, lon, cfg)
    labels = cells.assign(lat, lon)
    kept = labels >= 0
    assert 10 < len(cells) < 200 and 0 < (~kept).sum() < 100  # strays' cells dropped
    for n in np.flatnonzero(kept)[::7]:  # every kept photo in exactly one cell: its label's
        inside = [i for i, c in enumerate(cells.cells) if c.contains(lat[n], lon[n])]
        assert inside == [labels[n]]
    for n in np.flatnonzero(~kept):
        assert not any(c.contains(lat[n], lon[n]) for c in cells.cells)
    counts = np.bincount(labels[kept], minlength=len(cells))
    assert counts.tolist() == [c.count for c in cells.cells]
    for c in cells.cells:
        assert cfg.min_photos <= c.count and (c.count <= cfg.max_photos or c.level == cfg.max_level)
        if c.level > 0:  # it exists because its parent held too many photos
            pix, piz = grid_index(lat, lon, c.level - 1, cfg.root_cols, cfg.root_rows)
            assert ((pix == c.ix // 2) & (piz == c.iz // 2)).sum() > cfg.max_photos
    by_level = {}
    for c in cells.cells:
        by_level.setdefault(c.level, set()).add(round(c.area_km2, 3))
    assert all(len(areas) == 1 for areas in by_level.values())  # equal area at equal depth
    root_area = 4 * math.pi * R ** 2 / (cfg.root_cols * cfg.root_rows)
    for level, (area,) in by_level.items():
        assert area == pytest.approx(root_area / 4 ** level)
    assert cells.tokens == sorted(cells.tokens, key=lambda t: tuple(map(int, t.split("/"))))


def test_grid_cells_have_equal_area_on_the_sphere():
    # Uniform points on the sphere fall equally into every cell of a level: sin(latitude), not
    # latitude, is cut evenly (cutting latitude evenly would give polar cells ~1/3 the points).
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(320_000, 3))
    lat, lon = to_latlon(xyz)
    ix, iz = grid_index(lat, lon, 2, 4, 2)
    counts = np.bincount(ix * 8 + iz, minlength=16 * 8)
    assert counts.size == 128 and np.abs(counts / counts.mean() - 1).max() < 0.06


def test_geocells_errors_and_save_load(tmp_path):
    lat, lon = _clustered(500)
    with pytest.raises(ValueError, match="min_photos"):
        build_geocells(lat, lon, GeocellConfig(max_photos=10, min_photos=20))
    with pytest.raises(ValueError, match="min_photos=400"):
        build_geocells(lat, lon, GeocellConfig(max_photos=400, min_photos=400, max_level=0))
    with pytest.raises(ValueError, match="lat must be"):
        build_geocells([91.0], [0.0])
    cells = build_geocells(lat, lon, GeocellConfig(max_photos=100, min_photos=5))
    again = Geocells.load(cells.save(tmp_path / "cells.json"))
    assert again.tokens == cells.tokens and np.array_equal(again.assign(lat, lon), cells.assign(lat, lon))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        Geocells.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        Geocells.load(tmp_path / "none.json")


def test_accuracy_at_km_hand_example():
    shares = accuracy_at_km([0.5, 10, 100, 500, 1000, 3000, 25])
    assert shares == pytest.approx({1.0: 100 / 7, 25.0: 300 / 7, 200.0: 400 / 7, 750.0: 500 / 7,
                                    2500.0: 600 / 7}, abs=1e-3)  # 25 km counts as within 25
    with pytest.raises(ValueError):
        accuracy_at_km([])
    # the report: Paris predicted for Paris (0 km), London (344), Tokyo (9713)
    rep = geo_report([48.8566] * 3, [2.3522] * 3, [48.8566, 51.5074, 35.6762],
                         [2.3522, -0.1278, 139.6503])
    assert rep["within"]["Street (1 km)"] == pytest.approx(100 / 3, abs=1e-3)
    assert rep["within"]["Country (750 km)"] == pytest.approx(200 / 3, abs=1e-3)
    assert rep["median_km"] == pytest.approx(343.6, abs=0.5)


def test_predict_argmax_weighted_and_prior():
    lat = np.r_[np.full(50, 48.0), np.full(50, 49.0), np.full(60, -33.9)]
    lon = np.r_[np.full(50, 2.0), np.full(50, 2.0), np.full(60, 151.2)]
    cells = build_geocells(lat, lon, GeocellConfig(max_photos=59, min_photos=1))
    assert len(cells) == 3
    clat, clon = cells.centers()
    order = np.argsort(clat)  # Sydney, Paris-south (48), Paris-north (49)
    probs = np.zeros((2, 3))
    probs[0, order] = [0.0, 0.6, 0.4]
    probs[1, order] = [0.5, 0.3, 0.2]
    a_lat, a_lon = predict_locations(probs, cells, "argmax")
    assert a_lat == pytest.approx([48.0, -33.9]) and a_lon == pytest.approx([2.0, 151.2])
    w_lat, w_lon = predict_locations(probs, cells, "weighted", refine_km=500)
    assert 48.3 < w_lat[0] < 48.5 and w_lon[0] == pytest.approx(2.0)  # pulled toward 49
    assert w_lat[1] == pytest.approx(-33.9) and w_lon[1] == pytest.approx(151.2)  # Paris too far
    g_lat, _ = predict_locations(probs, cells, "argmax", centers="geometric")
    assert cells.cells[int(np.argmax(probs[0]))].contains(g_lat[0], 2.0)
    p_lat, p_lon = predict_locations(prior_probs(cells, 4), cells)
    assert p_lat == pytest.approx([-33.9] * 4)  # the most populous cell, whatever the image
    with pytest.raises(ValueError, match="probs"):
        predict_locations(np.ones((2, 4)) / 4, cells)
    with pytest.raises(ValueError, match="mode"):
        predict_locations(probs, cells, "mean")


def _csv(tmp_path, rows, header="image,latitude,longitude"):
    (tmp_path / "a.png").write_bytes(b"x")
    path = tmp_path / "photos.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_read_geo_csv_and_its_errors(tmp_path):
    photos = read_geo_csv(_csv(tmp_path, ["a.png,48.85,2.35", "a.png,-90,180"]))
    assert [(p.image.name, p.latitude, p.longitude) for p in photos] == [
        ("a.png", 48.85, 2.35), ("a.png", -90.0, 180.0)]
    for rows, exc, match in ((["a.png,95,2"], ValueError, r"row 2: latitude 95.0 is outside"),
                             (["a.png,45,190"], ValueError, "longitude 190.0 is outside"),
                             (["a.png,north,2"], ValueError, "latitude 'north' is not a number"),
                             (["a.png,1,2", "b.png,1,2"], FileNotFoundError, r"row 3: image not found"),
                             ([], ValueError, "no rows")):
        with pytest.raises(exc, match=match):
            read_geo_csv(_csv(tmp_path, rows))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['longitude'\]"):
        read_geo_csv(_csv(tmp_path, ["a.png,1"], header="image,latitude"))
    with pytest.raises(FileNotFoundError, match="geo CSV not found"):
        read_geo_csv(tmp_path / "none.csv")


def test_derived_locations_follow_the_story():
    # Two classes, brightness ranks pick the city, spreads set the distance.
    images = torch.arange(60, dtype=torch.uint8).repeat_interleave(4).reshape(60, 1, 2, 2)
    labels = np.r_[np.zeros(30, int), np.ones(30, int)]
    cfg = GeoDataConfig(regions_per_class=3, spreads_km=(1.0, 10.0, 100.0), outlier_rate=0.0)
    lat, lon, region = derive_locations(images, labels, cfg, np.random.default_rng(0))
    assert region.tolist() == [r for c in (0, 1) for r in [3 * c] * 10 + [3 * c + 1] * 10 + [3 * c + 2] * 10]
    city = np.array([CITIES[r][1:] for r in region])
    d = haversine_km(city[:, 0], city[:, 1], lat, lon)
    assert d[region % 3 == 0].max() < 5 and d[region % 3 == 2].mean() > 50
    cfg = GeoDataConfig(outlier_rate=0.5)
    _, _, region = derive_locations(images, labels, cfg, np.random.default_rng(0))
    assert 15 < (region == -1).sum() < 45
    with pytest.raises(ValueError, match="spreads_km"):
        GeoDataConfig(spreads_km=(0.0,)).validate()


@pytest.mark.needs_data
def test_tiny_end_to_end(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["geo", "make-data", str(data), "--train-images", "300", "--val-images", "40",
                 "--test-images", "60", "--regions-per-class", "1", "--outlier-rate", "0"]) == 0
    assert main(["geo", "make-data", str(data)]) == 2  # exists: a clear error, nothing replaced
    assert "already exists" in capsys.readouterr().err
    assert main(["geo", "cells", str(data / "train.csv"), "--max-photos", "60", "--min-photos", "5",
                 "--output", str(tmp_path / "cells.json")]) == 0
    assert main(["geo", "train", "--preset", "smoke", "--train-csv", str(data / "train.csv"),
                 "--val-csv", str(data / "val.csv"), "--cells", str(tmp_path / "cells.json"),
                 "--limit-train", "10000", "--batch-size", "32", "--out", str(run)]) == 0
    cells = Geocells.load(run / "cells.json")
    assert len(list((run / "data" / "train").iterdir())) == len(cells)
    capsys.readouterr()
    out = tmp_path / "table11.json"
    assert main(["geo", "eval", str(run / "model.safetensors"), "--csv", str(data / "test.csv"),
                 "--prior", "--prior-given", "garment", str(data / "train.csv"),
                 "--format", "json", "--output", str(out)]) == 0
    columns = json.loads(out.read_text())
    assert [c["system"] for c in columns] == ["class prior", "prior given garment",
                                              "0.25 MobileNet-32 (argmax)", "0.25 MobileNet-32 (weighted)"]
    for c in columns:
        assert c["images"] == 60 and list(c["within"]) == [f"{n} ({k:g} km)" for n, k in TABLE11_SCALES]
        shares = list(c["within"].values())
        assert shares == sorted(shares)  # nested thresholds
    # one city per garment, no outliers: knowing the garment places most photos within 200 km
    assert columns[1]["within"]["Region (200 km)"] > 80
    assert columns[2]["cells"] == len(cells)
    # costed as the 0.25 MobileNet at 32x32 it is, one output per cell: its classifier by hand
    cost = profile_model(MobileNetV1(0.25, num_classes=len(cells)), (3, 32, 32))
    assert columns[2]["madds_m"] == round(cost.total_madds / 1e6, 2)
    assert columns[2]["classifier_params_m"] == round((256 + 1) * len(cells) / 1e6, 3)
    assert main(["geo", "eval", str(run / "model.safetensors"), "--csv", str(data / "test.csv"),
                 "--modes", "argmax", "--paper", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("scale,0.25 MobileNet-32 (argmax),paper: Im2GPS,paper: PlaNet,"
                        "paper: PlaNet MobileNet")
    assert lines[1].startswith("Continent (2500 km),") and lines[1].endswith(",51.9,77.6,79.3")
    assert lines[5].startswith("Street (1 km),") and lines[5].endswith(",2.5,11.0,11.4")
    rows = table11_rows([{"system": "s", "within": {"Street (1 km)": 1.0}, "median_km": 2.0,
                              "madds_m": 3.0}], paper=True)
    assert [list(r.values()) for r in rows] == [["Street (1 km)", 1.0, 2.5, 11.0, 11.4],
                                                ["median error (km)", 2.0, None, None, None],
                                                ["Mult-Adds (M)", 3.0, None, None, None]]


def test_geo_cli_errors_are_one_line(tmp_path, capsys):
    csv_path = _csv(tmp_path, ["a.png,48.85,2.35"])
    for argv, message in ((["geo", "eval", "--csv", str(csv_path)], "nothing to evaluate"),
                          (["geo", "eval", "--csv", str(csv_path), "--prior"], "--prior needs --cells"),
                          (["geo", "cells", str(tmp_path / "no.csv"), "--output", "x.json"],
                           "geo CSV not found"),
                          (["geo", "cells", str(csv_path), "--output", "x.json", "--min-photos", "5",
                            "--max-photos", "2"], "min_photos (5) must be <= max_photos (2)"),
                          (["geo", "make-data", str(tmp_path / "d"), "--spreads-km", "1,far"],
                           "--spreads-km takes comma-separated km"),
                          (["finegrained", "make-data", str(tmp_path / "f"), "--classes", "0,shirt"],
                           "--classes takes comma-separated class ids")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
