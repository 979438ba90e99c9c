"""The analysis kernels (emergence, emergence layer, scale threshold, reactivation) and the cube, on hand-made cubes."""

import numpy as np
import pytest
import xarray as xr

from featurebirth import emergence as em
from featurebirth.cube import (
    CELL_VARIABLES,
    DESCRIPTIONS,
    PROBE_VARIABLES,
    QUALITY_VARIABLES,
    build_cube,
    open_cube,
    write_cube,
)

SETTINGS = {
    "tau": 0.8,
    "margin": 0.2,
    "tau_low": 0.6,
    "persistence": 1,
    "min_variance_explained": 0.5,
    "depth_bins": 3,
    "return_cosine": 0.5,
    "allow_duplicate_checkpoints": False,
    "min_ce_recovered": None,
    "max_ce_increase": None,
}
HIGH, LOW, MID = 0.95, 0.3, 0.7


def cube_of(
    scores: dict[str, np.ndarray], n_params: dict[str, int], steps: list[int], null: float = 0.5, seeds: int = 1
) -> xr.Dataset:
    """A cube from per-model score arrays [step, layer, category], the same for each of `seeds` SAE seeds; layers
    beyond a model's depth are NaN; the held-out controls score as the SAE does; no lineage measured (NaN)."""
    models = list(scores)
    n_layers = {m: scores[m].shape[1] for m in models}
    depth = max(n_layers.values())
    n_categories = next(iter(scores.values())).shape[2]
    padded = np.full((len(models), len(steps), depth, n_categories), np.nan)
    for i, m in enumerate(models):
        padded[i, :, : n_layers[m]] = scores[m]
    cell = ("model", "step", "layer", "category")
    per_seed = np.repeat(padded[None], seeds, axis=0)
    dims = ("seed", *cell)
    quality = np.where(np.isnan(per_seed[..., 0]), np.nan, 0.9)
    nulls = np.where(np.isnan(per_seed), np.nan, null)
    return xr.Dataset(
        {
            "score": (dims, per_seed),
            "null": (dims, nulls),
            "heldout_score": (dims, per_seed.copy()),
            "heldout_null": (dims, nulls.copy()),
            "probe_score": (cell, padded.copy()),
            "probe_null": (cell, nulls[0].copy()),
            "variance_explained": (dims[:4], quality),
            "direction_cosine": (
                ("seed", "model", "step", "category", "layer", "other_layer"),
                np.zeros((seeds, len(models), len(steps), n_categories, depth, depth)),
            ),
            **{name: (dims, np.full(per_seed.shape, np.nan)) for name in ("lineage_cosine", "lineage_correlation")},
            **{name: (cell, np.full(padded.shape, np.nan)) for name in ("seed_cosine", "seed_correlation")},
        },
        coords={
            "seed": np.arange(seeds),
            "model": models,
            "step": steps,
            "layer": np.arange(depth),
            "other_layer": np.arange(depth),
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
    flags = em.represented(cube, SETTINGS)
    step = em.emergence_step(flags, persistence).sel(seed=0, model="m", layer=0, category="c0")
    if expected is None:
        assert np.isnan(float(step))
    else:
        assert float(step) == expected


def test_score_above_tau_but_not_above_null_is_not_represented():
    cube = cube_of({"m": over_steps([0.85] * 5)}, {"m": 10}, STEPS5, null=0.7)
    assert not em.represented(cube, SETTINGS).any()


def test_controls_take_the_same_rule_and_only_the_sae_needs_a_healthy_sae():
    cube = cube_of({"m": over_steps([HIGH] * 5)}, {"m": 10}, STEPS5)
    cube["probe_null"][:, 0] = 0.9  # step 0: the probe does not beat its null by the margin
    cube["heldout_score"][:, :, 1] = 0.75  # step 1: the held-out SAE is below tau
    flags = em.control_represented(cube, SETTINGS).sel(seed=0, model="m", layer=0, category="c0")
    assert flags.sel(readout="heldout").values.tolist() == [True, False, True, True, True]
    assert flags.sel(readout="probe").values.tolist() == [False, True, True, True, True]
    cube["variance_explained"][:] = 0.2
    flags = em.control_represented(cube, SETTINGS).sel(seed=0, model="m", layer=0, category="c0")
    assert not flags.sel(readout="heldout").any() and flags.sel(readout="probe").values.tolist()[1:] == [True] * 4
    with pytest.raises(ValueError, match=r"no \['probe_score', 'probe_null'\].*rerun the score jobs"):
        em.control_represented(cube.drop_vars(["probe_score", "probe_null"]), SETTINGS)


def test_unhealthy_sae_is_not_represented():
    cube = cube_of({"m": over_steps([HIGH] * 5)}, {"m": 10}, STEPS5)
    cube["variance_explained"][:] = 0.2
    assert not em.represented(cube, SETTINGS).any()


def with_downstream(cube: xr.Dataset, recovered: list[float], increase: list[float]) -> xr.Dataset:
    """The cube (one model, one layer) with ce_loss_recovered and ce_loss_increase over its steps."""
    cube["ce_loss_recovered"] = (("model", "step", "layer"), np.array(recovered, dtype=float)[None, :, None])
    cube["ce_loss_increase"] = (("model", "step", "layer"), np.array(increase, dtype=float)[None, :, None])
    return cube


# step 0: zero ablation below evaluation.ce_floor (no ratio) but a costly splice; then 0.5, 0.8 (the floor), 0.95, 0.7
RECOVERED = [np.nan, 0.5, 0.8, 0.95, 0.7]
INCREASE = [0.9, 0.2, 0.5, 0.1, 0.4]


@pytest.mark.parametrize(
    "limits, expected",
    [
        ({}, [True] * 5),
        ({"min_ce_recovered": None, "max_ce_increase": None}, [True] * 5),
        ({"min_ce_recovered": 0.8}, [True, False, True, True, False]),  # NaN passes; 0.8 itself passes
        ({"max_ce_increase": 0.5}, [False, True, True, True, True]),  # the NaN cell is judged by its increase
        ({"min_ce_recovered": 0.8, "max_ce_increase": 0.3}, [False, False, False, True, False]),
    ],
    ids=["unset", "none", "min_ce_recovered", "max_ce_increase", "both"],
)
def test_downstream_limits_where_set(limits, expected):
    cube = with_downstream(cube_of({"m": over_steps([HIGH] * 5)}, {"m": 10}, STEPS5), RECOVERED, INCREASE)
    settings = {key: value for key, value in SETTINGS.items() if key not in ("min_ce_recovered", "max_ce_increase")}
    flags = em.represented(cube, {**settings, **limits})
    assert flags.sel(seed=0, model="m", layer=0, category="c0").values.tolist() == expected
    assert em.healthy(cube, {**settings, **limits}).sel(seed=0, model="m", layer=0).values.tolist() == expected


def test_downstream_limits_need_the_downstream_variables():
    cube = cube_of({"m": over_steps([HIGH] * 5)}, {"m": 10}, STEPS5)  # no ce_loss_* in it
    assert em.represented(cube, SETTINGS).all()
    with pytest.raises(ValueError, match="analysis.min_ce_recovered is set but the cube has no ce_loss_recovered"):
        em.represented(cube, {**SETTINGS, "min_ce_recovered": 0.5})
    with pytest.raises(ValueError, match="analysis.max_ce_increase is set but the cube has no ce_loss_increase"):
        em.represented(cube, {**SETTINGS, "max_ce_increase": 0.5})


def test_emergence_layer_is_the_shallowest_represented():
    scores = np.array([[[LOW, LOW], [LOW, HIGH], [HIGH, HIGH]]])  # 1 step, 3 layers, 2 categories
    cube = cube_of({"m": scores}, {"m": 10}, [5])
    layer = em.emergence_layer(em.represented(cube, SETTINGS)).sel(seed=0, model="m", step=5)
    assert layer.values.tolist() == [2, 1]
    never = cube_of({"m": np.full((1, 3, 1), LOW)}, {"m": 10}, [5])
    assert np.isnan(em.emergence_layer(em.represented(never, SETTINGS)).item())


def depth_cube() -> xr.Dataset:
    """small: 2 layers, represented only in its last layer (relative depth 1.0, the late bin);
    large: 4 layers, represented only in layer 0 (relative depth 0.25, the early bin)."""
    small = np.array([[[LOW], [HIGH]]])
    large = np.array([[[HIGH], [LOW], [LOW], [LOW]]])
    return cube_of({"small": small, "large": large}, {"small": 100, "large": 1000}, [7])


def scale_threshold(flags: xr.DataArray, n_params: xr.DataArray) -> xr.DataArray:
    """Parameters of the smallest model with a represented layer, as `analyse` composes them."""
    return em.threshold_params(em.smallest_model(flags, n_params), n_params)


def test_scale_threshold_across_models_of_different_depths():
    cube = depth_cube().sel(seed=0)
    flags = em.represented(cube, SETTINGS)
    assert float(scale_threshold(flags, cube["n_params"]).sel(step=7, category="c0")) == 100
    by_depth = scale_threshold(em.depth_binned(cube, flags, 3), cube["n_params"]).sel(step=7, category="c0")
    assert by_depth["depth_bin"].values.tolist() == ["all", "0-33%", "33-67%", "67-100%"]
    assert by_depth.sel(depth_bin="all").item() == 100
    assert by_depth.sel(depth_bin="0-33%").item() == 1000
    assert np.isnan(by_depth.sel(depth_bin="33-67%").item())
    assert by_depth.sel(depth_bin="67-100%").item() == 100


def test_layers_a_model_does_not_have_never_count():
    cube = depth_cube()
    assert em.studied(cube).sel(seed=0, model="small", step=7).values.tolist() == [True, True, False, False]
    depth = em.relative_depth(cube["layer"], cube["n_layers"])
    assert depth.sel(model="small", layer=[0, 1]).values.tolist() == [0.5, 1.0]
    assert depth.sel(model="large").values.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert np.isnan(em.relative_depth(xr.DataArray(np.nan), cube["n_layers"]).sel(model="small").item())
    flags = em.represented(cube, SETTINGS).sel(seed=0)
    assert flags.sel(model="small", step=7, category="c0").values.tolist() == [False, True, False, False]
    late = em.depth_binned(cube.sel(seed=0), flags, 3).sel(depth_bin="67-100%", step=7, category="c0")
    assert late.sel(model="small").values.tolist() == [False, True, False, False]
    assert not late.sel(model="large").any()


@pytest.mark.parametrize(
    "present, sizes, expected",
    [
        ([False, True, True], [300, 100, 100], 1),  # equal sizes: the model listed first
        ([True, False, True], [100, 100, 50], 2),
        ([True, False, False], [100, 100, 50], 0),  # equal sizes, only the first present: the first
        ([False, True, False], [100, 100, 50], 1),  # equal sizes, only the second present: the second
        ([False, False, False], [100, 100, 50], -1),
    ],
)
def test_smallest_present_names_the_model_by_position(present, sizes, expected):
    assert em.smallest_present(np.array(present), np.array(sizes)).item() == expected


def test_threshold_params_and_names_follow_the_index():
    models = xr.DataArray(["a", "b", "c"], dims="model")
    n_params = xr.DataArray([10, 10, 5], dims="model")
    index = xr.DataArray([0, 1, 2, -1], dims="step")
    assert em.threshold_names(index, models).values.tolist() == ["a", "b", "c", ""]
    assert em.threshold_params(index, n_params).values.tolist()[:3] == [10, 10, 5]
    assert np.isnan(em.threshold_params(index, n_params).values[3])


def test_earliest_emergence_is_the_earliest_step_over_layers_with_its_layer():
    # category c0: layer 2 at step 1, layer 1 at step 2; c1: layers 0 and 2 both at step 4 (the shallower wins); c2 never
    steps = xr.DataArray(
        [[[np.nan, 4, np.nan], [2, np.nan, np.nan], [1, 4, np.nan]]],
        dims=("model", "layer", "category"),
        coords={"model": ["m"], "layer": [0, 1, 2], "category": ["c0", "c1", "c2"]},
    )
    earliest, layer = em.earliest_emergence(steps)
    assert earliest.sel(model="m").values[:2].tolist() == [1, 4]
    assert layer.sel(model="m").values[:2].tolist() == [2, 0]
    assert np.isnan(earliest.sel(model="m", category="c2").item())
    assert np.isnan(layer.sel(model="m", category="c2").item())


def over_layers(values: list[float]) -> np.ndarray:
    """One step, one category: scores over layers as [1, layer, 1]."""
    return np.array(values, dtype=float)[None, :, None]


def test_reactivation_pattern_is_found_with_its_feature_verdict():
    cube = cube_of({"m": over_layers([HIGH, HIGH, LOW, 0.5, HIGH, MID])}, {"m": 10}, [3])
    cube["direction_cosine"].loc[{"model": "m", "step": 3, "category": "c0", "layer": 4, "other_layer": 1}] = 0.9
    cube["direction_cosine"].loc[{"model": "m", "step": 3, "category": "c0", "layer": 2, "other_layer": 1}] = 0.25
    events = em.reactivation_events(cube, em.represented(cube, SETTINGS), SETTINGS)
    assert events.columns.tolist() == list(em.REACTIVATION_COLUMNS)
    assert events.dtypes.to_dict() == {name: np.dtype(dtype) for name, dtype in em.REACTIVATION_DTYPES.items()}
    assert len(events) == 1
    event = events.iloc[0]
    assert (event.model, event.step, event.category) == ("m", 3, "c0")
    assert (event.l1, event.l2, event.l3) == (1, 2, 4)
    assert (event.score_l1, event.score_l2, event.score_l3) == (HIGH, LOW, HIGH)
    assert event.feature_verdict == "returns"
    assert event.cosine_l3_l1 == pytest.approx(0.9)
    assert event.cosine_l2_l1 == pytest.approx(0.25)
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
        (0, 1, 2),
        (2, 3, 5),
    ]


def step_scores(model: str, step: int, layers: list[int], n_layers: int, seeds: tuple[int, ...] = (0, 1)) -> xr.Dataset:
    """One (model, step) score file as the score stage writes it: every studied layer along `layer`, each SAE seed
    along `seed` (seed k scores k/100 higher), each probe set along `probe_set` (the mined set scores 0.05 lower, its
    best features one further, and has two probe items to the template set's three). Best features: category a's
    direction and codes are the same at every step and seed; b's direction turns by 90 degrees from step 0 to the
    later steps and is reversed in seed 1, and its codes move from item 1 to item 2."""
    per_layer = []
    for layer in layers:
        per_seed = []
        for seed in seeds:
            sets = []
            for offset, items in ((0, 3), (1, 2)):
                base = np.array([0.9, 0.1]) + layer / 100 - offset / 20 + seed / 100
                scores = xr.Dataset(
                    {name: ("category", base) for name in CELL_VARIABLES}, coords={"category": ["a", "b"]}
                )
                scores["best_feature"] = ("category", np.array([layer, layer + 1], dtype=np.int32) + offset)
                b = np.eye(4)[(layer // 2 + 1 + (step > 0)) % 4] * (-1 if seed else 1)
                scores["best_direction"] = (
                    ("category", "hidden"),
                    np.stack([np.eye(4)[layer // 2], b]).astype(np.float32),
                )
                codes = np.zeros((2, items), dtype=np.float32)
                codes[0, 0], codes[1, 1 if step == 0 else items - 1] = 1, 2
                scores["best_codes"] = (("category", "item"), codes)
                sets.append(scores.assign_coords(item=np.arange(items)))
            cell = xr.concat(sets, "probe_set", join="outer").assign_coords(probe_set=["template", "mined"])
            for i, name in enumerate(QUALITY_VARIABLES):
                cell[name] = 0.5 + i / 100 + layer / 1000 + seed / 10
            per_seed.append(cell)
        scores = xr.concat(per_seed, "seed").assign_coords(seed=list(seeds))
        probe = {name: (("probe_set", "category"), [[0.7, 0.2], [0.6, 0.1]]) for name in PROBE_VARIABLES}
        per_layer.append(scores.assign(probe).expand_dims(layer=[layer]))
    counts = {"probe_words": [[3, 3], [3, 1]], "probe_items": [[6, 6], [20, 2]]}
    coords = {"probe_set": ["template", "mined"], "category": ["a", "b"]}
    totals = xr.Dataset({k: (("probe_set", "category"), v) for k, v in counts.items()}, coords=coords)
    scores = xr.concat(per_layer, "layer").merge(totals)
    scores.attrs.update(
        model=model, step=step, n_params=10 * n_layers, tokens_seen=step * 64, d_model=4, n_layers=n_layers
    )
    return scores


def test_cube_from_step_scores_pads_shallow_models_and_round_trips(tmp_path):
    scored = [step_scores("s", st, [0, 1], 2) for st in (0, 5)]
    scored += [step_scores("d", st, [0, 2], 3) for st in (5, 0)]  # layer 1 not studied; files in any order
    settings = {
        "models": ["s", "d"],
        "steps": [0, 5],
        "categories": ["a", "b"],
        "planted_frequency": {"a": 2, "b": 1},
        "probe_sets": ["template", "mined"],
        "seeds": [0, 1],
        "provenance": {"note": "test"},
    }
    cube = build_cube(scored, settings)
    sizes = {"probe_set": 2, "seed": 2, "model": 2, "step": 2, "layer": 3, "category": 2, "other_layer": 3}
    assert dict(cube.sizes) == sizes
    assert cube["score"].dims == ("probe_set", "seed", "model", "step", "layer", "category")
    assert cube["probe_score"].dims == ("probe_set", "model", "step", "layer", "category")
    assert cube.attrs["n_cells"] == 8
    assert cube["score"].sel(model="s", layer=2).isnull().all()
    assert cube["score"].sel(model="d", layer=1).isnull().all()
    assert (cube["best_feature"].sel(model="d", layer=1) == -1).all()
    cell = {"model": "d", "step": 5, "layer": 2, "category": "a"}
    assert float(cube["score"].sel(probe_set="template", seed=0, **cell)) == pytest.approx(0.92)
    assert float(cube["score"].sel(probe_set="template", seed=1, **cell)) == pytest.approx(0.93)
    assert float(cube["score"].sel(probe_set="mined", seed=0, **cell)) == pytest.approx(0.87)
    assert float(cube["probe_score"].sel(probe_set="mined", **cell)) == pytest.approx(0.6)
    assert cube["best_feature"].sel(seed=0, **cell).values.tolist() == [2, 3]
    assert cube["probe_words"].values.tolist() == [[3, 3], [3, 1]] and cube["probe_items"].dims == (
        "probe_set",
        "category",
    )
    # lineage: a is the same feature at steps 0 and 5 and in both seeds; b's direction turned (cosine 0) and its
    # codes moved on the template set ([0, 2, 0] then [0, 0, 2], correlation -1/2) but not on the mined set (two
    # items, padded to three with NaN, which the correlation leaves out: [0, 2] both times, 1); seed 1's b points
    # the other way (seed cosine -1), with the same codes (seed correlation 1); nothing before the first step
    lineage = cube.sel(model="d", layer=2, step=5)
    assert lineage["lineage_cosine"].sel(category="a").values.tolist() == [[1.0, 1.0]] * 2
    np.testing.assert_allclose(lineage["lineage_cosine"].sel(category="b").values, 0.0, atol=1e-7)
    assert lineage["lineage_correlation"].sel(category="b").values.tolist() == [
        [pytest.approx(-0.5)] * 2,
        [pytest.approx(1.0)] * 2,
    ]
    assert lineage["seed_cosine"].values.tolist() == [[1.0, -1.0]] * 2
    np.testing.assert_allclose(lineage["seed_correlation"].values, 1.0)
    assert (
        cube["lineage_cosine"].sel(step=0).isnull().all()
        and cube["lineage_correlation"].sel(model="s", layer=2).isnull().all()
    )
    assert cube["tokens_seen"].sel(model="d").values.tolist() == [0, 320]
    assert cube["n_layers"].values.tolist() == [2, 3]
    # layers 0 and 2 of model d have orthogonal best directions; each with itself has cosine 1
    cosine = cube["direction_cosine"].sel(probe_set="mined", seed=1, model="d", step=0, category="a")
    assert float(cosine.sel(layer=0, other_layer=2)) == pytest.approx(0.0)
    assert float(cosine.sel(layer=2, other_layer=2)) == pytest.approx(1.0)
    assert np.isnan(float(cosine.sel(layer=1, other_layer=2)))
    # every quality variable, downstream quality included, per (model, step, layer), described
    for i, name in enumerate(QUALITY_VARIABLES):
        assert cube[name].dims == ("seed", "model", "step", "layer"), name
        assert cube[name].attrs["description"] == DESCRIPTIONS[name]
        assert float(cube[name].sel(seed=1, model="d", step=5, layer=2)) == pytest.approx(0.6 + i / 100 + 0.002), name
        assert cube[name].sel(model="d", step=5, layer=1).isnull().all(), name
    assert {"ce_loss_clean", "ce_loss_sae", "ce_loss_zero", "ce_loss_recovered", "ce_loss_increase", "kl_score"} <= set(
        QUALITY_VARIABLES
    )
    write_cube(cube, tmp_path / "cube.nc")
    xr.testing.assert_identical(open_cube(tmp_path / "cube.nc"), cube)


def test_lineage_compares_each_step_with_the_previous_configured_one():
    """b's direction turns between steps 0 and 5 and then stays; seed 1's b points the other way. Each seed is
    compared with the other seed's feature at the step before: at 5 against 0 the cosine is 0 (turned), at 9
    against 5 it is -1 (the other seed's reversed b), and would be 0 against step 0."""
    settings = {
        "models": ["s"],
        "steps": [0, 5, 9],
        "categories": ["a", "b"],
        "planted_frequency": {"a": 2, "b": 1},
        "probe_sets": ["template", "mined"],
        "seeds": [0, 1],
        "provenance": {},
    }
    cube = build_cube([step_scores("s", step, [0, 1], 2) for step in (0, 5, 9)], settings)
    b = cube.sel(model="s", layer=0, category="b")
    np.testing.assert_allclose(b["lineage_cosine"].sel(step=5).values, 0.0, atol=1e-7)
    np.testing.assert_allclose(b["lineage_cosine"].sel(step=9).values, -1.0)
    np.testing.assert_allclose(b["lineage_correlation"].sel(step=9).values, 1.0)  # the codes stayed put from 5 on
    assert b["lineage_cosine"].sel(step=0).isnull().all()
