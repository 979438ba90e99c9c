"""The analysis computed once (`analyse`), stored losslessly, and shown by the tables, figures and summary unchanged."""

import io
import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from rich.console import Console
from test_emergence import HIGH, LOW, MID, SETTINGS, STEPS5, cube_of, over_layers, with_downstream

from featurebirth import emergence as em
from featurebirth import figures, layout
from featurebirth.analysis import (
    ARRAY_FIELDS,
    analyse,
    analyse_probe_sets,
    read_analyses,
    read_analysis,
    write_analyses,
)
from featurebirth.cube import duplicate_steps
from featurebirth.summary import print_summary
from featurebirth.tables import (
    EMERGENCE_LAYER_COLUMNS,
    EMERGENCE_STEP_COLUMNS,
    LINEAGE_COLUMNS,
    PROBE_COLUMNS,
    PROBE_SET_COLUMN,
    SCALE_COLUMNS,
    SUMMARY_COLUMNS,
    seed_values,
    write_tables,
)

TABLES = {
    "emergence_steps": EMERGENCE_STEP_COLUMNS,
    "emergence_layers": EMERGENCE_LAYER_COLUMNS,
    "scale_thresholds": SCALE_COLUMNS,
    "reactivation": em.REACTIVATION_COLUMNS,
    "summary_table": SUMMARY_COLUMNS,
    "probe_baseline": PROBE_COLUMNS,
    "lineage": LINEAGE_COLUMNS,
}


def with_probe_sets(cube: xr.Dataset, sets: tuple[str, ...] = ("template",)) -> xr.Dataset:
    """A one-probe-set cube as the cube stage writes it: along probe_set (each set the same scores)."""
    return cube.expand_dims(probe_set=list(sets))


def tables_of(cube: xr.Dataset, analysis, tmp_path: Path) -> dict:
    """write_tables of a one-probe-set cube and its analysis, as the template set."""
    return write_tables(with_probe_sets(cube), {"template": analysis}, layout.tables_dir(tmp_path))


def planted_order_cube() -> xr.Dataset:
    """One model, one layer: c0 (most frequent) emerges at step 1, c1 at step 2, c2 at step 4, c3 never."""
    scores = np.full((5, 1, 4), LOW)
    for category, first in {0: 1, 1: 2, 2: 3}.items():
        scores[first:, 0, category] = HIGH
    return cube_of({"m": scores}, {"m": 10}, STEPS5)


def rich_cube() -> xr.Dataset:
    """Three models of different depths over five steps, with emergence, reactivation and categories that never emerge."""
    rng = np.random.default_rng(3)

    def scores(n_layers: int) -> np.ndarray:
        values = rng.choice([LOW, 0.5, MID, 0.85, HIGH], size=(len(STEPS5), n_layers, 4), p=[0.3, 0.1, 0.1, 0.1, 0.4])
        values[:, :, 3] = LOW
        return values

    cube = cube_of({"a": scores(3), "b": scores(5), "c": scores(4)}, {"a": 100, "b": 300, "c": 200}, STEPS5)
    cube["direction_cosine"][:] = rng.uniform(-1, 1, cube["direction_cosine"].shape)
    cube["step"].attrs["units"] = "optimizer steps"
    cube["score"].attrs["description"] = "category score"
    return cube


def equal_size_cube(represented_models: tuple[str, ...]) -> xr.Dataset:
    """Two models with the same parameter count, 'first' listed before 'second'; only `represented_models` represent c0."""
    scores = {name: np.full((1, 2, 1), HIGH if name in represented_models else LOW) for name in ("first", "second")}
    return cube_of(scores, {"first": 10, "second": 10}, [3])


def one_dip_cube() -> xr.Dataset:
    """One model at step 3: represented at layer 0, dipped at layer 1, back at layer 2; decoder cosines 0.75."""
    cube = cube_of({"m": over_layers([HIGH, LOW, HIGH])}, {"m": 10}, [3])
    cube["direction_cosine"][:] = 0.75
    return cube


def duplicate_cube() -> xr.Dataset:
    """One model whose steps 2 and 4 have the same weights (fingerprint f2)."""
    cube = cube_of({"m": np.array([LOW, HIGH, HIGH, HIGH, HIGH])[:, None, None]}, {"m": 10}, STEPS5)
    fingerprints = np.array([["f0", "f1", "f2", "f2", "f4"]])
    cube["fingerprint"] = (("model", "step"), fingerprints)
    cube["duplicate_checkpoint"] = (("model", "step"), duplicate_steps(fingerprints.astype(object)))
    return cube


@pytest.mark.parametrize("make_cube", [rich_cube, planted_order_cube, duplicate_cube, lambda: equal_size_cube(())])
def test_write_then_read_is_lossless(make_cube, tmp_path):
    analysis = analyse(make_cube(), {**SETTINGS, "allow_duplicate_checkpoints": True})
    other = analyse(make_cube(), {**SETTINGS, "allow_duplicate_checkpoints": True, "tau": 0.9})
    path = Path(layout.analysis_path(tmp_path))
    write_analyses({"template": analysis, "mined": other}, path)
    assert list(path.parent.iterdir()) == [path]  # written under a temporary name, then renamed
    assert list(read_analyses(path)) == ["template", "mined"]
    assert read_analysis(path, "mined").equals(other) and not read_analysis(path, "mined").equals(analysis)
    back = read_analysis(path, "template")
    for name in ARRAY_FIELDS:
        xr.testing.assert_identical(getattr(back, name), getattr(analysis, name))
        assert getattr(back, name).dtype == getattr(analysis, name).dtype
    pd.testing.assert_frame_equal(back.reactivation, analysis.reactivation)
    assert (back.settings, back.spearman, back.duplicates) == (
        analysis.settings,
        analysis.spearman,
        analysis.duplicates,
    )
    assert back.equals(analysis)
    with xr.open_dataset(path, engine="h5netcdf", group="template") as stored:
        assert json.loads(stored.attrs["settings"]) == {**SETTINGS, "allow_duplicate_checkpoints": True}
        assert stored.sizes["event"] == len(analysis.reactivation)


def test_rich_cube_has_the_events_the_round_trip_covers():
    analysis = analyse(rich_cube(), SETTINGS)
    assert analysis.reactivation["feature_verdict"].value_counts().to_dict() == {"new": 9, "returns": 3}
    assert (int(analysis.emergence_step.isnull().sum()), int(analysis.emergence_step.notnull().sum())) == (30, 30)
    assert sorted(set(analysis.scale_model.values.ravel())) == ["", "a", "b", "c"]
    assert int(analysis.represented.sum()) == 93


def test_analysis_arrays_have_the_documented_dimensions():
    analysis = analyse(rich_cube(), SETTINGS)
    dims = {name: getattr(analysis, name).dims for name in ARRAY_FIELDS}
    assert dims == {
        "represented": ("seed", "model", "step", "layer", "category"),
        "emergence_step": ("seed", "model", "layer", "category"),
        "emergence_layer": ("seed", "model", "step", "category"),
        "earliest_step": ("seed", "model", "category"),
        "earliest_layer": ("seed", "model", "category"),
        "scale_threshold": ("seed", "step", "category", "depth_bin"),
        "scale_model": ("seed", "step", "category", "depth_bin"),
        "control_represented": ("readout", "seed", "model", "step", "layer", "category"),
        "control_emergence_step": ("readout", "seed", "model", "layer", "category"),
        "control_earliest_step": ("readout", "seed", "model", "category"),
        "control_earliest_layer": ("readout", "seed", "model", "category"),
    }
    assert analysis.represented.dtype == analysis.control_represented.dtype == bool
    assert analysis.control_represented["readout"].values.tolist() == ["heldout", "probe"]
    assert analysis.scale_threshold["depth_bin"].values.tolist() == ["all", "0-33%", "33-67%", "67-100%"]


def test_the_analysis_follows_the_planted_order():
    analysis = analyse(planted_order_cube(), SETTINGS)
    assert analysis.settings == SETTINGS
    steps = analysis.emergence_step.sel(seed=0, model="m", layer=0).values
    assert steps[:3].tolist() == [1, 2, 4] and np.isnan(steps[3])
    assert analysis.earliest_step.sel(seed=0, model="m").values[:3].tolist() == [1, 2, 4]
    assert analysis.earliest_layer.sel(seed=0, model="m").values[:3].tolist() == [0, 0, 0]
    assert int(analysis.represented.sum()) == 4 + 3 + 2
    assert analysis.emergence_layer.sel(seed=0, model="m", step=8).values[:3].tolist() == [0, 0, 0]
    assert analysis.scale_threshold.sel(seed=0, step=8, depth_bin="all").values[:3].tolist() == [10, 10, 10]
    assert analysis.scale_model.sel(seed=0, step=8, depth_bin="all").values.tolist() == ["m", "m", "m", ""]
    assert analysis.reactivation.empty
    assert analysis.spearman == {"m": {"rho": pytest.approx(-1.0), "p_value": pytest.approx(0.0), "n_categories": 4}}
    assert analysis.spearman_every_later_step == analysis.spearman


def test_lineage_table_pairs_each_step_with_the_one_before_and_gives_the_gap_to_the_seeds(tmp_path):
    cube = planted_order_cube()  # steps 0, 1, 2, 4, 8; one seed
    cell = {"model": "m", "layer": 0, "category": "c1"}
    cube["lineage_correlation"].loc[{**cell, "step": 4}] = 0.9
    cube["seed_correlation"].loc[{**cell, "step": 4}] = 0.95
    cube["lineage_cosine"].loc[{**cell, "step": 4}] = 0.6
    cube["seed_cosine"].loc[{**cell, "step": 4}] = 0.4
    tables_of(cube, analyse(cube, SETTINGS), tmp_path)
    table = pd.read_csv(layout.table_path(tmp_path, "lineage"), sep="\t", comment="#")
    assert len(table) == 4 * 4  # 4 categories x the 4 steps after the first
    row = table[(table["category"] == "c1") & (table["step"] == 4)].iloc[0]
    assert row["previous_step"] == 2
    assert row["correlation_gap"] == pytest.approx(0.05) and row["cosine_gap"] == pytest.approx(-0.2)
    assert table[table["step"] != 4]["lineage_correlation"].isnull().all()


def test_spearman_when_emerged_means_represented_at_every_later_step():
    # c0 is represented at steps 1 and 2, drops at 4, is back at 8: with persistence 1 it emerges at 1, represented
    # at every later step only at 8; c1 from 2, c2 from 4, c3 never
    scores = np.full((5, 1, 4), LOW)
    scores[[1, 2, 4], 0, 0] = HIGH
    scores[2:, 0, 1] = HIGH
    scores[3:, 0, 2] = HIGH
    analysis = analyse(cube_of({"m": scores}, {"m": 10}, STEPS5), SETTINGS)  # persistence 1
    assert analysis.spearman["m"]["rho"] == pytest.approx(-1.0)  # steps 1, 2, 4, never
    # steps 8, 2, 4, never against frequencies 1, 1/2, 1/4, 1/8: ranks (3, 1, 2, 4) against (4, 3, 2, 1), rho -0.4
    assert analysis.spearman_every_later_step["m"]["rho"] == pytest.approx(-0.4)


def test_seeds_are_analysed_alike_and_summed_up_by_the_median_step(tmp_path):
    # seed 0 as planted_order_cube; seed 1: c0 from step 2, c1 flickers (represented at 2, not 4, again at 8), c2 at 4
    cube = planted_order_cube()
    cube = xr.concat([cube, cube.copy(deep=True)], "seed", data_vars="all").assign_coords(seed=[0, 5])
    cube["score"].loc[{"seed": 5, "step": 1, "category": "c0"}] = LOW
    cube["score"].loc[{"seed": 5, "step": 4, "category": "c1"}] = LOW
    for name in ("probe_score", "probe_null", "seed_cosine", "seed_correlation"):  # no seed dimension
        cube[name] = cube[name].isel(seed=0, drop=True)
    analysis = analyse(cube, SETTINGS)  # persistence 1
    assert analysis.earliest_step.fillna(-1).values.tolist() == [[[1, 2, 4, -1]], [[2, 8, 4, -1]]]
    # the median of two: the later step; never ranks after every step
    estimate, agreeing = em.over_seeds(analysis.earliest_step)
    assert estimate.fillna(-1).values.tolist() == [[2, 8, 4, -1]] and agreeing.values.tolist() == [[1, 1, 2, 2]]
    # frequency order c0 > c1 > c2 > c3 against steps 2, 8, 4, never: rho 0.8; represented at every later step
    # from then on: the same steps
    assert analysis.spearman["m"]["rho"] == pytest.approx(-0.8)
    assert analysis.spearman_every_later_step["m"]["rho"] == pytest.approx(-0.8)
    summary = tables_of(cube, analysis, tmp_path)["probe_sets"]["template"]
    assert summary["seeds"] == [0, 5]
    assert summary["represented_cells_per_seed"] == [9, 7]
    assert summary["represented_cells_every_seed"] == 7
    assert summary["findings_in_every_seed"]["earliest_emergence_steps"] == {"found": 3, "same_step_in_every_seed": 1}
    table = pd.read_csv(layout.table_path(tmp_path, "emergence_steps"), sep="\t", comment="#", keep_default_na=False)
    assert table["emergence_step"].tolist() == ["2", "8", "4", ""]
    assert table["seed_steps"].tolist() == ["1/2", "2/8", "4/4", "-/-"]
    # a longer entry after a shorter one is written whole
    steps = xr.DataArray([[np.nan, 4.0], [128.0, 32.0]], dims=("category", "seed"))
    assert seed_values(steps).values.tolist() == ["-/4", "128/32"]
    assert table["seeds_agreeing"].tolist() == [1, 1, 2, 2] and table["n_seeds"].tolist() == [2] * 4


@pytest.mark.parametrize(
    "override", [{"tau": 0.99}, {"margin": 0.5}, {"min_variance_explained": 0.95}], ids=lambda o: next(iter(o))
)
def test_represented_follows_the_settings(override):
    analysis = analyse(planted_order_cube(), {**SETTINGS, **override})
    assert analysis.settings == {**SETTINGS, **override}
    assert int(analysis.represented.sum()) == 0
    assert np.isnan(analysis.earliest_step).all()


def test_min_ce_recovered_moves_emergence_and_nan_ratios_pass(tmp_path):
    # c0 represented from step 1; its SAE recovers 0.5 of the loss at steps 1 and 2, 0.9 later; step 0 has no ratio
    cube = with_downstream(planted_order_cube(), [np.nan, 0.5, 0.5, 0.9, 0.9], [0.0, 1.0, 1.0, 0.1, 0.1])
    assert analyse(cube, SETTINGS).earliest_step.sel(seed=0, model="m").values[:3].tolist() == [1, 2, 4]
    settings = {**SETTINGS, "min_ce_recovered": 0.8}
    analysis = analyse(cube, settings)
    assert analysis.earliest_step.sel(seed=0, model="m").values[:3].tolist() == [4, 4, 4]
    assert int(analysis.represented.sum()) == 3 * 2
    # the NaN-ratio step 0 passes the floor; its scores do not
    assert analysis.represented.sel(step=0).sum() == 0
    assert bool(em.healthy(cube, settings).sel(model="m", step=0, layer=0))
    assert analysis.settings["min_ce_recovered"] == 0.8
    write_analyses({"template": analysis}, tmp_path / "analysis.nc")
    assert read_analysis(tmp_path / "analysis.nc", "template").equals(analysis)


@pytest.mark.parametrize(
    "override, verdicts", [({}, ["returns"]), ({"return_cosine": 0.8}, ["new"]), ({"tau_low": 0.2}, [])]
)
def test_reactivation_follows_the_settings(override, verdicts):
    cube = one_dip_cube()
    assert analyse(cube, {**SETTINGS, **override}).reactivation["feature_verdict"].tolist() == verdicts


@pytest.mark.parametrize(
    "represented_models, expected",
    [(("first",), "first"), (("second",), "second"), (("first", "second"), "first")],
)
def test_scale_threshold_names_the_represented_model_among_equal_sizes(represented_models, expected, tmp_path):
    cube = equal_size_cube(represented_models)
    analysis = analyse(cube, SETTINGS)
    assert analysis.scale_model.sel(step=3, category="c0", depth_bin="all").item() == expected
    assert analysis.scale_threshold.sel(step=3, category="c0", depth_bin="all").item() == 10
    tables_of(cube, analysis, tmp_path)
    scale = pd.read_csv(layout.table_path(tmp_path, "scale_thresholds"), sep="\t", comment="#")
    assert scale.loc[scale["depth_bin"] == "all", ["scale_model", "scale_threshold"]].values.tolist() == [
        [expected, 10]
    ]
    summary = pd.read_csv(layout.table_path(tmp_path, "summary_table"), sep="\t", comment="#")
    assert summary[["scale_model", "scale_threshold"]].values.tolist() == [[expected, 10], [expected, 10]]


def test_duplicate_checkpoints_are_refused_unless_allowed(tmp_path):
    cube = duplicate_cube()
    assert cube["duplicate_checkpoint"].values.tolist() == [[False, False, True, True, False]]
    with pytest.raises(em.DuplicateCheckpointError, match=r"m step 2 \(f2\), m step 4 \(f2\)"):
        analyse(cube, SETTINGS)
    allowed = analyse(cube, {**SETTINGS, "allow_duplicate_checkpoints": True})
    assert int(allowed.represented.sum()) == 4
    expected = [{"model": "m", "step": 2, "fingerprint": "f2"}, {"model": "m", "step": 4, "fingerprint": "f2"}]
    assert allowed.duplicates == expected
    summary = write_tables(with_probe_sets(cube), {"template": allowed}, layout.tables_dir(tmp_path))
    assert summary["duplicate_checkpoints"] == expected


def test_every_probe_set_is_analysed_on_its_own_and_tabled_side_by_side(tmp_path):
    template = planted_order_cube()
    mined = planted_order_cube()
    mined["score"][0, 0, :, 0, 0] = LOW  # on mined contexts c0 never emerges; the rest as on the templates
    cube = xr.concat([template, mined], "probe_set").assign_coords(probe_set=["template", "mined"])
    cube = cube.assign_coords(probe_words=(("probe_set", "category"), [[3, 3, 3, 3], [3, 3, 3, 1]]))
    analyses = analyse_probe_sets(cube, SETTINGS)
    assert list(analyses) == ["template", "mined"]
    assert analyses["template"].equals(analyse(template, SETTINGS))
    assert analyses["mined"].earliest_step.sel(seed=0, model="m").fillna(-1).values.tolist() == [-1, 2, 4, -1]
    summary = write_tables(cube, analyses, layout.tables_dir(tmp_path))
    table = pd.read_csv(layout.table_path(tmp_path, "summary_table"), sep="\t", comment="#")
    steps = table.set_index(["probe_set", "category"])["earliest_emergence_step"].fillna(-1).astype(int)
    assert steps.to_dict() == {
        **{("template", c): s for c, s in zip(["c0", "c1", "c2", "c3"], [1, 2, 4, -1])},
        **{("mined", c): s for c, s in zip(["c0", "c1", "c2", "c3"], [-1, 2, 4, -1])},
    }
    emergence = pd.read_csv(layout.table_path(tmp_path, "emergence_steps"), sep="\t", comment="#")
    assert emergence["probe_set"].value_counts().to_dict() == {"template": 4, "mined": 4}
    assert list(summary["probe_sets"]) == ["template", "mined"]
    assert summary["probe_sets"]["template"]["not_scored"] == {}
    assert summary["probe_sets"]["mined"]["not_scored"] == {"c3": 1}  # one word with contexts: reported
    assert (
        summary["probe_sets"]["mined"]["represented_cells_every_seed"]
        == summary["probe_sets"]["template"]["represented_cells_every_seed"] - 4
    )


def test_tables_are_cut_from_the_analysis(tmp_path):
    cube = planted_order_cube()
    summary = tables_of(cube, analyse(cube, SETTINGS), tmp_path)
    assert list(TABLES) == list(layout.TABLES)  # every table the workflow writes
    for name, columns in TABLES.items():
        path = Path(layout.table_path(tmp_path, name))
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        assert header[1:] == [f"# {column}: {text}" for column, text in (PROBE_SET_COLUMN | columns).items()]
        assert pd.read_csv(path, sep="\t", comment="#").columns.tolist() == ["probe_set", *columns]
    steps = pd.read_csv(layout.table_path(tmp_path, "emergence_steps"), sep="\t", comment="#")
    assert steps["emergence_step"].tolist()[:3] == [1, 2, 4]
    assert steps["tokens_seen"].tolist()[:3] == [1000, 2000, 4000]
    table = pd.read_csv(layout.table_path(tmp_path, "summary_table"), sep="\t", comment="#")
    assert table["earliest_emergence_step"].tolist()[:3] == [1, 2, 4] and np.isnan(table["earliest_emergence_step"][3])
    assert table["earliest_emergence_layer"].tolist()[:3] == [0, 0, 0] and np.isnan(
        table["earliest_emergence_layer"][3]
    )
    assert table["scale_model"].tolist()[:3] == ["m", "m", "m"] and np.isnan(table["scale_model"][3])
    assert table["scale_threshold"].tolist()[:3] == [10, 10, 10] and np.isnan(table["scale_threshold"][3])
    assert json.loads(Path(layout.summary_path(tmp_path)).read_text()) == summary
    assert summary["settings"] == SETTINGS
    assert summary["final_step"] == 8
    assert list(summary["probe_sets"]) == ["template"]
    template = summary["probe_sets"]["template"]
    assert (
        template["represented_cells_every_seed"],
        template["represented_at_step0"],
        template["reactivation_events"],
    ) == (
        9,
        0,
        0,
    )
    assert template["spearman_frequency_vs_emergence_step"]["m"]["rho"] == pytest.approx(-1.0)
    assert template["not_scored"] == {}
    assert [row["earliest_emergence_step"] for row in template["categories"]] == [1, 2, 4, None]
    assert [row["earliest_emergence_layer"] for row in template["categories"]] == [0, 0, 0, None]
    assert [(row["scale_model"], row["scale_threshold"]) for row in template["categories"]] == [("m", 10)] * 3 + [
        (None, None)
    ]


def test_probe_table_gives_the_lag_of_the_held_out_sae_behind_the_probe(tmp_path):
    cube = planted_order_cube()  # the SAE: c0 emerges at step 1, c1 at 2, c2 at 4, c3 never
    probe = np.full((5, 1, 4), LOW)
    for category, first in {0: 0, 1: 1, 2: 2, 3: 4}.items():  # one configured step earlier; c3 at the last step
        probe[first:, 0, category] = HIGH
    cube["probe_score"][0] = probe
    cube["heldout_score"][0, 0, :, 0, 2] = LOW  # on held-out words the SAE never finds c2
    tables_of(cube, analyse(cube, SETTINGS), tmp_path)
    table = pd.read_csv(layout.table_path(tmp_path, "probe_baseline"), sep="\t", comment="#")
    assert table["category"].tolist() == ["c0", "c1", "c2", "c3"]
    columns = ["sae_emergence_step", "heldout_emergence_step", "probe_emergence_step", "lag", "lag_in_sample"]
    assert table[columns].fillna(-1).astype(int).values.tolist() == [
        [1, 1, 0, 1, 1],
        [2, 2, 1, 1, 1],
        [4, -1, 2, -1, 2],
        [-1, -1, 8, -1, -1],
    ]
    assert table["probe_emergence_layer"].tolist() == [0, 0, 0, 0]


def test_scale_table_has_one_row_per_depth_bin_step_and_category(tmp_path):
    small, large = np.array([[[LOW], [HIGH]]]), np.array([[[HIGH], [LOW], [LOW], [LOW]]])
    cube = cube_of({"small": small, "large": large}, {"small": 100, "large": 1000}, [7])
    tables_of(cube, analyse(cube, SETTINGS), tmp_path)
    scale = pd.read_csv(layout.table_path(tmp_path, "scale_thresholds"), sep="\t", comment="#", keep_default_na=False)
    assert scale["depth_bin"].tolist() == ["all", "0-33%", "33-67%", "67-100%"]
    assert scale["scale_model"].tolist() == ["small", "large", "", "small"]
    assert scale["scale_threshold"].tolist() == ["100", "1000", "", "100"]


def test_reactivation_table_lists_the_events(tmp_path):
    cube = one_dip_cube()
    tables_of(cube, analyse(cube, SETTINGS), tmp_path)
    events = pd.read_csv(layout.table_path(tmp_path, "reactivation"), sep="\t", comment="#")
    assert events[["model", "step", "category", "l1", "l2", "l3"]].values.tolist() == [["m", 3, "c0", 0, 1, 2]]
    assert events[["score_l1", "score_l2", "score_l3", "cosine_l3_l1"]].values.tolist() == [[HIGH, LOW, HIGH, 0.75]]
    assert events["feature_verdict"].tolist() == ["returns"]
    summary = pd.read_csv(layout.table_path(tmp_path, "summary_table"), sep="\t", comment="#")
    assert summary["reactivations"].tolist() == ["0>1>2@3"]


@pytest.fixture
def forbid_recomputation(monkeypatch):
    """A switch: once called, every analysis kernel raises, so whatever is shown must come from the Analysis."""

    def refuse(*args, **kwargs):
        raise AssertionError("the analysis was recomputed")

    def forbid() -> None:
        for name in KERNELS:
            monkeypatch.setattr(em, name, refuse)

    return forbid


KERNELS = (
    "represented",
    "emergence_step",
    "emergence_layer",
    "earliest_emergence",
    "smallest_model",
    "threshold_params",
    "threshold_names",
    "depth_binned",
    "reactivation_events",
    "spearman_by_model",
    "duplicate_checkpoints",
    "dip_events",
    "first_persistent",
)


def stored_config_disagrees(cube: xr.Dataset) -> xr.Dataset:
    """The cube's provenance config holds other thresholds: anything that read it would show them."""
    cube.attrs["config"] = json.dumps({"analysis": {**SETTINGS, "tau": 0.11, "tau_low": 0.01, "persistence": 0}})
    return cube


def test_tables_and_summary_do_not_recompute(tmp_path, forbid_recomputation):
    cube = stored_config_disagrees(planted_order_cube())
    analysis = analyse(cube, SETTINGS)
    forbid_recomputation()
    with pytest.raises(AssertionError, match="recomputed"):
        em.represented(cube, SETTINGS)
    summary = tables_of(cube, analysis, tmp_path)
    assert (summary["settings"]["tau"], summary["probe_sets"]["template"]["represented_cells_every_seed"]) == (0.8, 9)
    console = Console(record=True, width=200, file=io.StringIO())
    print_summary(cube, analysis, "template", console)
    assert "score >= 0.8" in console.export_text()


def test_print_summary_shows_the_analysis(tmp_path):
    cube = planted_order_cube()
    console = Console(record=True, width=200, file=io.StringIO())
    print_summary(cube, analyse(cube, {**SETTINGS, "tau": 0.9}), "template", console)
    text = console.export_text()
    assert "probe set template: represented: score >= 0.9, score - null >= 0.2, SAE variance explained >= 0.5; " in text
    assert "m, template probes  (Spearman frequency vs emergence step: -1; represented at every later step: -1)" in text
    rows = [line.split("│")[1:-1] for line in text.splitlines() if line.startswith("│")]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["c0", "1", "1 (layer 0)", "0", "m", "-", "1 / 1"],
        ["c1", "0.5", "2 (layer 0)", "0", "m", "-", "2 / 2"],
        ["c2", "0.25", "4 (layer 0)", "0", "m", "-", "4 / 4"],
        ["c3", "0.125", "-", "-", "-", "-", "- / -"],
    ]


@pytest.fixture
def captured(monkeypatch) -> list[plt.Figure]:
    """Figures handed to `figures._save`, kept open for inspection instead of written."""
    kept = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, dpi: kept.append(fig))
    yield kept
    for fig in kept:
        plt.close(fig)


def horizontal_lines(fig: plt.Figure) -> set[float]:
    """The y of every horizontal line drawn across an axes (axhline)."""
    return {
        round(float(line.get_ydata()[0]), 6)
        for ax in fig.axes
        for line in ax.get_lines()
        if list(line.get_xdata()) == [0, 1]
    }


def test_figures_take_tau_and_events_from_the_analysis(tmp_path, forbid_recomputation, captured):
    cube = stored_config_disagrees(cube_of({"m": np.stack([over_layers([HIGH, LOW, HIGH])[0]] * 2)}, {"m": 10}, [1, 2]))
    analysis = analyse(cube, {**SETTINGS, "tau": 0.77, "tau_low": 0.55})
    forbid_recomputation()
    figures.emergence_curves(cube, analysis, tmp_path / "emergence.png", 50)
    figures.scale(cube, analysis, [2], tmp_path / "scale.png", 50)
    figures.reactivation(cube, analysis, [1, 2], tmp_path / "reactivation.png", 50)
    emergence, scale, reactivation = captured
    assert horizontal_lines(emergence) == horizontal_lines(scale) == {0.77}
    assert horizontal_lines(reactivation) == {0.77, 0.55}
    assert "tau = 0.77" in emergence._suptitle.get_text() and "tau = 0.77" in scale._suptitle.get_text()
    assert "tau_low = 0.55" in reactivation._suptitle.get_text()
    assert "2 in all" in reactivation._suptitle.get_text()
    dips = [c.get_offsets().tolist() for ax in reactivation.axes for c in ax.collections if c.get_label() == "dip"]
    assert dips == [[[1, LOW]], [[1, LOW]]]


def test_emergence_figure_has_a_row_per_readout(tmp_path, captured):
    cube = planted_order_cube()
    cube["heldout_score"] = cube["heldout_score"].where(cube["heldout_score"].isnull(), 0.6)
    cube["probe_score"] = cube["probe_score"].where(cube["probe_score"].isnull(), 0.4)
    figures.emergence_curves(cube, analyse(cube, SETTINGS), tmp_path / "emergence.png", 50)
    (fig,) = captured
    assert [ax.get_title() for ax in fig.axes] == [f"{title}\nm" for _, title in figures.READOUTS.values()]
    curves = [[list(line.get_ydata()) for line in ax.get_lines() if line.get_marker() == "o"] for ax in fig.axes]
    assert curves[0][0] == [LOW, HIGH, HIGH, HIGH, HIGH]  # c0, the SAE (all words)
    assert curves[1] == [[0.6] * 5] * 4 and curves[2] == [[0.4] * 5] * 4


def test_heatmap_boundary_is_the_analysis_emergence_step(tmp_path, captured):
    # layer 0 represented from step 2 on (column 1), layer 1 never (right edge, column 3)
    scores = np.array([[[LOW], [LOW]], [[HIGH], [LOW]], [[HIGH], [LOW]]])
    cube = cube_of({"m": scores, "deep": np.full((3, 3, 1), LOW)}, {"m": 10, "deep": 20}, [0, 2, 4])
    analysis = analyse(cube, SETTINGS)
    figures.heatmaps(cube, analysis, "m", tmp_path / "m.png", 50)
    (fig,) = captured
    boundary = [line for line in fig.axes[0].get_lines() if line.get_color() == "black"]
    assert [list(boundary[0].get_xdata()), list(boundary[0].get_ydata())] == [[1, 1, 3, 3], [0, 1, 1, 2]]


def test_figures_are_written_as_png(tmp_path):
    cube = rich_cube()
    analysis = analyse(cube, SETTINGS)
    steps = figures.shown_steps([int(s) for s in cube["step"].values], None)
    assert steps == [0, 1, 4, 8]
    figures.heatmaps(cube, analysis, "b", tmp_path / "heatmap.png", 50)
    figures.emergence_curves(cube, analysis, tmp_path / "emergence.png", 50)
    figures.scale(cube, analysis, steps, tmp_path / "scale.png", 50)
    figures.reactivation(cube, analysis, steps, tmp_path / "reactivation.png", 50)
    for name in ("heatmap", "emergence", "scale", "reactivation"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "emergence.png",
        "heatmap.png",
        "reactivation.png",
        "scale.png",
    ]


def quality_cube() -> xr.Dataset:
    """Two models over steps 0, 2, 4: 'm' (two layers) with downstream quality, the ratio NaN at step 0."""
    scores = np.full((3, 2, 1), HIGH)
    cube = cube_of({"m": scores, "deep": np.full((3, 3, 1), LOW)}, {"m": 10, "deep": 20}, [0, 2, 4])
    recovered = np.full((2, 3, 3), np.nan)
    recovered[0, 1:, :2] = [[0.5, 0.9], [0.95, 0.7]]  # (step, layer) of model m
    increase = np.full((2, 3, 3), np.nan)
    increase[0, :, :2] = [[0.01, 0.02], [1.2, 0.2], [0.1, 0.6]]
    dims = ("model", "step", "layer")
    return cube.assign(ce_loss_recovered=(dims, recovered), ce_loss_increase=(dims, increase))


def test_quality_heatmaps_show_recovered_and_increase_and_mark_unhealthy_cells(tmp_path, captured):
    cube = quality_cube()
    analysis = analyse(cube, {**SETTINGS, "min_ce_recovered": 0.8})
    figures.quality_heatmaps(cube, analysis, "m", tmp_path / "m.png", 50)
    (fig,) = captured
    recovered, increase = (ax for ax in fig.axes if ax.get_title())
    assert recovered.get_title().startswith("CE loss recovered") and increase.get_title().startswith("CE loss increase")
    for ax, name in ((recovered, "ce_loss_recovered"), (increase, "ce_loss_increase")):
        shown = ax.collections[0].get_array()
        expected = cube[name].sel(model="m", layer=[0, 1]).transpose("layer", "step").values
        np.testing.assert_array_equal(np.ma.filled(shown.astype(float), np.nan).reshape(2, 3), expected)
        assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "2", "4"]
        # crosses at (step 2, layer 0) and (step 4, layer 1): below min_ce_recovered; step 0 (no ratio) passes
        crosses = [c for c in ax.collections if c.get_label() == "unhealthy"]
        x, y = figures.MARK_AT
        assert sorted(map(tuple, crosses[0].get_offsets().tolist())) == [(1 + x, 0 + y), (2 + x, 1 + y)]
    assert matplotlib.colors.to_hex(recovered.get_facecolor()) == figures.NAN_COLOUR  # NaN cells show it
    assert "min_ce_recovered = 0.8" in fig._suptitle.get_text()
    # no limit set: nothing marked
    figures.quality_heatmaps(cube, analyse(cube, SETTINGS), "m", tmp_path / "m.png", 50)
    unset = captured[1]
    assert [len(c.get_offsets()) for ax in unset.axes for c in ax.collections if c.get_label() == "unhealthy"] == [0, 0]
    assert "none set" in unset._suptitle.get_text()


def test_quality_heatmaps_are_written_as_png(tmp_path):
    cube = quality_cube()
    figures.quality_heatmaps(cube, analyse(cube, SETTINGS), "m", tmp_path / "quality.png", 50)
    assert (tmp_path / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_draw_the_configured_probe_set_or_mined_where_there_is_one():
    template_only = with_probe_sets(planted_order_cube())
    both = with_probe_sets(planted_order_cube(), ("template", "mined"))
    assert figures.drawn_probe_set(template_only, None) == "template"
    assert figures.drawn_probe_set(both, None) == "mined"
    assert figures.drawn_probe_set(both, "template") == "template"
    with pytest.raises(
        ValueError, match=r"figures.probe_set: the cube has no probe set 'mined' \(it has \['template'\]\)"
    ):
        figures.drawn_probe_set(template_only, "mined")
