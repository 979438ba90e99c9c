"""Every results-tree path is written once, in featurebirth/layout.py: a literal elsewhere fails here."""

import io
import re
import tokenize
from pathlib import Path

import pytest
from conftest import REPO

from featurebirth import layout

# Fragments that only a results-tree path contains: its folders, its file names, its cell patterns.
RESULTS_TREE = re.compile(
    r"(?<![\w.-])(corpus|models|hub|sae|scores|activations|tables|figures|logs)/"
    r"|step\{|layer\{|group-\{?|\bstep\d*\.json"
    r"|\b(tokens\.h5|probes\.tsv|lexicon\.json|train\.txt|sae\.txt|eval\.txt|ae\.pt|metrics\.json|cube\.nc"
    r"|analysis\.nc|summary\.json|report\.html)\b|\w\.h5\b"
)
PRODUCT = ["Snakefile", "workflow/rules/*.smk", "workflow/featurebirth/*.py", "benchmarks/*.py", "scripts/*.sh"]
OWNER = REPO / "workflow" / "featurebirth" / "layout.py"


def string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of a Python or Snakemake file (comments and docstrings included
    only as far as they are strings)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [(token.start[0], token.string) for token in tokens if token.type == tokenize.STRING]


def shell_lines(path: Path) -> list[tuple[int, str]]:
    return [(number, line) for number, line in enumerate(path.read_text().splitlines(), 1) if not line.startswith("#")]


def literals(path: Path) -> list[tuple[int, str]]:
    return shell_lines(path) if path.suffix == ".sh" else string_literals(path)


def product_files() -> list[Path]:
    return sorted(path for pattern in PRODUCT for path in REPO.glob(pattern) if path != OWNER)


def test_no_results_path_outside_layout():
    found = [
        f"{path.relative_to(REPO)}:{line}: {text.strip()[:100]}"
        for path in product_files()
        for line, text in literals(path)
        if RESULTS_TREE.search(text) and not text.lstrip().startswith(('"""', "'''"))
    ]
    assert not found, "results-tree paths outside featurebirth/layout.py:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "literal",
    [
        '"sae/m/step0"',
        'f"{results}/scores/{model}"',
        '"cube.nc"',
        '"train-0-1.h5"',
        "'layer{layer}'",
        '"group-0-1.json"',
        '"hub/m/step3.json"',
    ],
)
def test_the_detector_sees_a_results_path(tmp_path, literal):
    stray = tmp_path / "stray.py"
    stray.write_text(f"PATH = {literal}\n")
    assert any(RESULTS_TREE.search(text) for _, text in string_literals(stray)), literal


def test_layout_round_trips_layer_groups(tmp_path):
    layers = [0, 3, 11]
    assert layout.parse_layer_group(layout.layer_group(layers)) == layers
    assert layout.parse_group_name(layout.group_name(layers, [2, 7])) == (layers, [2, 7])
    # seed 0 alone (sae.seed's old default) keeps the name jobs had before there were seeds
    assert layout.group_name(layers) == layout.group_name(layers, [0]) == "0-3-11"
    assert layout.parse_group_name("0-3-11") == (layers, [0])
    assert (
        layout.group_name(layers, [1]) == "0-3-11.seeds-1" and layout.group_name(layers, [0, 1]) == "0-3-11.seeds-0-1"
    )
    for group in (([0, 1], [0]), ([2], [0]), ([0, 1, 2], [4, 9])):
        manifest = Path(layout.sae_group(tmp_path, "m", 5, layout.group_name(*group)))
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text("{}")
    Path(layout.sae_dir(tmp_path, "m", 5, 0)).mkdir()
    assert layout.trained_groups(tmp_path, "m", 5) == [([0, 1, 2], [4, 9]), ([0, 1], [0]), ([2], [0])]
    assert layout.trained_groups(tmp_path, "m", 6) == []
    # seed 0's SAEs keep the folders of the time before seeds; another seed's are under seed<seed>/, whatever the
    # order of sae.seeds
    assert layout.group_sae_dirs(layout.sae_group(tmp_path, "m", 5, "0-1.seeds-9-0")) == {
        (0, 9): layout.sae_dir(tmp_path, "m", 5, 0, seed=9),
        (0, 0): layout.sae_dir(tmp_path, "m", 5, 0),
        (1, 9): layout.sae_dir(tmp_path, "m", 5, 1, seed=9),
        (1, 0): layout.sae_dir(tmp_path, "m", 5, 1),
    }
    assert layout.sae_dir(tmp_path, "m", 5, 1, seed=9) == f"{tmp_path}/sae/m/step5/seed9/layer1"
    assert layout.sae_dir(tmp_path, "m", 5, 1, seed=0) == f"{tmp_path}/sae/m/step5/layer1"
    assert layout.group_sae_dirs(layout.sae_group(tmp_path, "m", 5, "2")) == {
        (2, 0): layout.sae_dir(tmp_path, "m", 5, 2)
    }
    assert layout.log_for(tmp_path, layout.score_path(tmp_path, "m", 5)).startswith(f"{tmp_path}/logs/")
