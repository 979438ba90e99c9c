"""Emergence, emergence layer, scale threshold and reactivation on hand-made cubes with known answers."""

import numpy as np
import pytest
import xarray as xr

from featurebirth import emergence as em
from featurebirth.cube import build_cube, open_cube, write_cube
from featurebirth.tables import summary_frame, write_tables

SETTINGS = {"tau": 0.8, "margin": 0.2, "tau_low": 0.6, "persistence": 1, "min_variance_explained": 0.5,
            "depth_bins": 3, "return_cosine": 0.5}
HIGH, LOW, MID = 0.95, 0.3, 0.7


def cube_of(scores: dict[str, np.ndarray], n_params: dict[str, int], steps: list[int], null: float = 0.5) -> xr.Dataset:
    """A cube from per-model score arrays [step, layer, category]; layers beyond a model's depth are NaN."""
    models = list(scores)
    n_layers = {m: scores[m].shape[1] for m in models}
    depth = max(n_layers.values())
    n_categories = next(iter(scores.values())).shape[2]
    padded = np.full((len(models), len(steps), depth, n_categories), np.nan)
    for i, m in enumerate(models):
        padded[i, :, : n_layers[m]] = scores[m]
    dims = ("model", "step", "layer", "category")
    quality = np.where(np.isnan(padded[..., 0]), np.nan, 0.9)
    return xr.Dataset(
        {
            "score": (dims, padded),
            "null": (dims, np.where(np.isnan(padded), np.nan, null)),
            "variance_explained": (dims[:3], quality),
            "direction_cosine": (("model", "step", "category", "layer", "other_layer"),
                                 np.zeros((len(models), len(steps), n_categories, depth, depth))),
        },
        coords={
            "model": models, "step": steps, "layer": np.arange(depth), "other_layer": np.arange(depth),
            "category": [f"c{i}" for i in range(n_categories)],
            "n_params": ("model", [n_params[m] for m in models]),
            "n_layers": ("model", [n_layers[m] for m in models]),
            "tokens_seen": (("model", "step"), np.outer(np.ones(len(models)), steps) * 1000.0),
            "planted_frequency": ("category", 2.0 ** -np.arange(n_categories)),
        },
    )


def over_steps(values: list[float]) -> np.ndarray:
    """One model, one layer, one category: scores over steps as [step, 1, 1]."""
    return np.array(values, dtype=float)[:, None, None]


STEPS5 = [0, 1, 2, 4, 8]


@pytest.mark.parametrize(
    "pattern, persistence, expected",
    [
        ([LOW, HIGH, LOW, HIGH, HIGH], 0, 1),
        ([LOW, HIGH, LOW, HIGH, HIGH], 1, 4),
        ([LOW, HIGH, LOW, HIGH, HIGH], 2, 4),  # stays to the end: counts
        ([LOW, LOW, LOW, LOW, LOW], 0, None),  # never emerges
        ([LOW, HIGH, LOW, LOW, LOW], 0, 1),  # appears and vanishes: only without persistence
        ([LOW, HIGH, LOW, LOW, LOW], 1, None),
        ([LOW, LOW, LOW, LOW, HIGH], 3, 8),  # the last step alone, to the end
        ([HIGH, HIGH, HIGH, HIGH, HIGH], 1, 0),
    ],
)
def test_emergence_step(pattern, persistence, expected):
    cube = cube_of({"m": over_steps(pattern)}, {"m": 10}, STEPS5)
    step = em.emergence_step(em.represented(cube, SETTINGS), persistence).sel(model="m", layer=0, category="c0")
    assert (np.isnan(float(step)) if expected is None else float(step) == expected)


def test_score_above_tau_but_not_above_null_is_not_represented():
    cube = cube_of({"m": over_steps([0.85] * 5)}, {"m": 10}, STEPS5, null=0.7)
    assert not em.represented(cube, SETTINGS).any()


def test_unhealthy_sae_is_not_represented():
    cube = cube_of({"m": over_steps([HIGH] * 5)}, {"m": 10}, STEPS5)
    cube["variance_explained"][:] = 0.2
    assert not em.represented(cube, SETTINGS).any()


def test_emergence_layer_is_the_shallowest_represented():
    scores = np.array([[[LOW, LOW], [LOW, HIGH], [HIGH, HIGH]]])  # 1 step, 3 layers, 2 categories
    cube = cube_of({"m": scores}, {"m": 10}, [5])
    layer = em.emergence_layer(em.represented(cube, SETTINGS)).sel(model="m", step=5)
    assert layer.values.tolist() == [2, 1]
    never = cube_of({"m": np.full((1, 3, 1), LOW)}, {"m": 10}, [5])
    assert np.isnan(em.emergence_layer(em.represented(never, SETTINGS)).item())


def test_scale_threshold_across_models_of_different_depths():
    # small: 2 layers, represented only in its last layer (relative depth 1.0, the late bin)
    # large: 4 layers, represented only in layer 0 (relative depth 0.25, the early bin)
    small = np.array([[[LOW], [HIGH]]])
    large = np.array([[[HIGH], [LOW], [LOW], [LOW]]])
    cube = cube_of({"small": small, "large": large}, {"small": 100, "large": 1000}, [7])
    flags = em.represented(cube, SETTINGS)
    assert float(em.scale_threshold(flags, cube["n_params"]).sel(step=7, category="c0")) == 100
    by_depth = em.scale_threshold_by_depth(cube, flags, 3).sel(step=7, category="c0")
    assert by_depth.sel(depth_bin="0-33%").item() == 1000
    assert np.isnan(by_depth.sel(depth_bin="33-67%").item())
    assert by_depth.sel(depth_bin="67-100%").item() == 100
    # the small model's layers 2 and 3 do not exist: they must not count
    assert cube["score"].sel(model="small", layer=[2, 3]).isnull().all()


def over_layers(values: list[float]) -> np.ndarray:
    """One step, one category: scores over layers as [1, layer, 1]."""
    return np.array(values, dtype=float)[None, :, None]


def test_reactivation_pattern_is_found_with_its_feature_verdict():
    cube = cube_of({"m": over_layers([HIGH, HIGH, LOW, 0.5, HIGH, MID])}, {"m": 10}, [3])
    cube["direction_cosine"].loc[{"model": "m", "step": 3, "category": "c0", "layer": 4, "other_layer": 1}] = 0.9
    events = em.reactivation_events(cube, em.represented(cube, SETTINGS), SETTINGS)
    assert len(events) == 1
    event = events.iloc[0]
    assert (event.l1, event.l2, event.l3) == (1, 2, 4)
    assert event.feature_verdict == "returns"
    assert event.cosine_l3_l1 == pytest.approx(0.9)
    cube["direction_cosine"][:] = 0.1
    assert em.reactivation_events(cube, em.represented(cube, SETTINGS), SETTINGS).iloc[0].feature_verdict == "new"


@pytest.mark.parametrize(
    "pattern",
    [
        [HIGH, HIGH, HIGH, HIGH],  # flat, represented
        [LOW, LOW, LOW, LOW],  # flat, absent
        [LOW, 0.5, MID, HIGH],  # monotone rising
        [HIGH, MID, 0.5, LOW],  # monotone falling
        [HIGH, MID, HIGH, HIGH],  # a dip that stays above tau_low
        [LOW, HIGH, LOW, LOW],  # fades and never returns
    ],
)
def test_no_reactivation_in_flat_monotone_or_shallow_patterns(pattern):
    cube = cube_of({"m": over_layers(pattern)}, {"m": 10}, [3])
    assert em.reactivation_events(cube, em.represented(cube, SETTINGS), SETTINGS).empty


def test_two_dips_are_two_events():
    assert em.dip_events(np.array([HIGH, LOW, HIGH, 0.2, 0.4, HIGH]), np.array([1, 0, 1, 0, 0, 1], bool), 0.6) == [
        (0, 1, 2), (2, 3, 5)]


def test_summary_and_spearman_follow_the_planted_order(tmp_path):
    # category c0 (most frequent) emerges at step 1, c1 at step 2, c2 at step 4, c3 never
    table = {0: 1, 1: 2, 2: 3}
    scores = np.full((5, 1, 4), LOW)
    for category, first in table.items():
        scores[first:, 0, category] = HIGH
    cube = cube_of({"m": scores}, {"m": 10}, STEPS5)
    frame, summary = summary_frame(cube, SETTINGS)
    assert frame["emergence_step"].tolist()[:3] == [1, 2, 4]
    assert np.isnan(frame["emergence_step"].tolist()[3])
    assert summary["spearman_frequency_vs_emergence_step"]["m"]["rho"] == pytest.approx(-1.0)
    assert summary["represented_at_step0"] == 0
    write_tables(cube, SETTINGS, tmp_path)
    import pandas as pd

    steps = pd.read_csv(tmp_path / "emergence_steps.tsv", sep="\t", comment="#")
    assert steps["emergence_step"].tolist()[:3] == [1, 2, 4]
    assert steps["tokens_seen"].tolist()[:3] == [1000, 2000, 4000]


def test_cube_from_cells_pads_shallow_models_and_round_trips(tmp_path):
    categories = ["a", "b"]

    def cell(model: str, step: int, layer: int, n_layers: int) -> xr.Dataset:
        scores = xr.Dataset(
            {name: ("category", np.array([0.9, 0.1]) + layer / 100) for name in ("score", "null", "auroc", "precision", "recall")},
            coords={"category": categories},
        )
        scores["best_feature"] = ("category", np.array([layer, layer + 1], dtype=np.int32))
        scores["best_direction"] = (("category", "hidden"), np.eye(2, 4, k=layer // 2, dtype=np.float32))
        for name in ("variance_explained", "l0", "dead_fraction"):
            scores[name] = 0.5
        scores.attrs.update(model=model, step=step, layer=layer, n_params=10 * n_layers, tokens_seen=step * 64,
                            d_model=4, n_layers=n_layers)
        return scores

    cells = [cell("s", st, layer, 2) for st in (0, 5) for layer in (0, 1)]
    cells += [cell("d", st, layer, 3) for st in (0, 5) for layer in (0, 2)]  # layer 1 not studied
    cube = build_cube(cells, ["s", "d"], [0, 5], categories, {"a": 2, "b": 1}, {"note": "test"})
    assert dict(cube.sizes) == {"model": 2, "step": 2, "layer": 3, "category": 2, "other_layer": 3}
    assert cube["score"].sel(model="s", layer=2).isnull().all()
    assert cube["score"].sel(model="d", layer=1).isnull().all()
    assert cube["best_feature"].sel(model="d", layer=1).values.tolist() == [[-1, -1], [-1, -1]]
    assert float(cube["score"].sel(model="d", step=5, layer=2, category="a")) == pytest.approx(0.92)
    assert cube["tokens_seen"].sel(model="d").values.tolist() == [0, 320]
    assert cube["n_layers"].values.tolist() == [2, 3]
    # layers 0 and 2 of model d have orthogonal best directions; each with itself has cosine 1
    cosine = cube["direction_cosine"].sel(model="d", step=0, category="a")
    assert float(cosine.sel(layer=0, other_layer=2)) == pytest.approx(0.0)
    assert float(cosine.sel(layer=2, other_layer=2)) == pytest.approx(1.0)
    assert np.isnan(float(cosine.sel(layer=1, other_layer=2)))
    write_cube(cube, tmp_path / "cube.nc")
    xr.testing.assert_identical(open_cube(tmp_path / "cube.nc"), cube)


def test_duplicate_checkpoints_are_refused_unless_allowed():
    cube = cube_of({"m": over_steps([LOW, HIGH, HIGH, HIGH, HIGH])}, {"m": 10}, STEPS5)
    fingerprints = np.array([["f0", "f1", "f2", "f2", "f4"]])
    from featurebirth.cube import duplicate_steps

    cube["fingerprint"] = (("model", "step"), fingerprints)
    cube["duplicate_checkpoint"] = (("model", "step"), duplicate_steps(fingerprints.astype(object)))
    assert cube["duplicate_checkpoint"].values.tolist() == [[False, False, True, True, False]]
    with pytest.raises(em.DuplicateCheckpointError, match=r"m step 2 \(f2\), m step 4 \(f2\)"):
        em.represented(cube, SETTINGS)
    allowed = em.represented(cube, {**SETTINGS, "allow_duplicate_checkpoints": True})
    assert int(allowed.sum()) == 4
    _, summary = summary_frame(cube, {**SETTINGS, "allow_duplicate_checkpoints": True})
    assert [d["step"] for d in summary["duplicate_checkpoints"]] == [2, 4]
