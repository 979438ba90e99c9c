"""Real text, offline: documents from every supported format, the fetch from a dataset laid out in the hub cache as
huggingface_hub leaves it (only as many shards as the budgets need), the document split, the packing and the budget
checks, each bad input refused with the key or the file named."""

import copy
import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl_zst

from featurebirth import layout
from featurebirth.config import (
    ConfigError,
    text_check_settings,
    text_fetch_settings,
    text_tokenize_settings,
    validate_config,
)
from featurebirth.corpus import SAE_SPLIT
from featurebirth.models import load_tokenizer
from featurebirth.text import (
    BudgetError,
    TextSourceError,
    check_text,
    documents,
    fetch_text,
    joined,
    local_files,
    rows_of,
    split_documents,
    tokenize_text,
)

DOCS = ["the first document", "a second one\nover two lines", "third"]


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".jsonl.zst", ".parquet"])
def test_every_format_gives_its_documents(tmp_path, suffix):
    path = tmp_path / f"docs{suffix}"
    records = [{"body": doc, "id": i} for i, doc in enumerate(DOCS)]
    if suffix == ".txt":
        path.write_text("\n\n".join(DOCS) + "\n")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif suffix == ".jsonl.zst":
        write_jsonl_zst(path, records)
    else:
        pq.write_table(pa.table({"body": DOCS, "id": [0, 1, 2]}), path)
    assert list(documents(path, "body")) == DOCS


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.zst", ".parquet"])
def test_an_absent_text_field_is_named_with_the_file(tmp_path, suffix):
    path = tmp_path / f"docs{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table({"content": DOCS}), path)
    elif suffix == ".jsonl":
        path.write_text(json.dumps({"content": "x"}) + "\n")
    else:
        write_jsonl_zst(path, [{"content": "x"}])
    with pytest.raises(TextSourceError, match=f"{path}.*text field 'text' absent"):
        list(documents(path, "text"))


def test_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(TextSourceError, match="docs.csv: unknown text format"):
        list(documents(tmp_path / "docs.csv", "text"))


def test_documents_split_disjoint_and_seeded():
    parts = split_documents(100, eval_documents=10, probe_documents=5, seed=3)
    assert [len(parts[p]) for p in ("sae", "eval", "probe")] == [85, 10, 5]
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(100))
    assert parts["sae"].tolist() == sorted(parts["sae"].tolist())  # training documents keep their order
    again = split_documents(100, 10, 5, seed=3)
    assert all(np.array_equal(parts[p], again[p]) for p in parts)
    assert not np.array_equal(split_documents(100, 10, 5, seed=4)["eval"], parts["eval"])
    with pytest.raises(TextSourceError, match="the text has 15 documents: too few"):
        split_documents(15, 10, 5, seed=3)


def test_packing_joins_documents_with_eos_and_drops_the_last_partial_row():
    packed = rows_of(joined([[1, 2, 3], [4], [5, 6]], eos=0), seq_len=4)
    assert packed.tolist() == [[1, 2, 3, 0], [4, 0, 5, 6]]  # the trailing EOS of the last document fills no row
    assert rows_of(joined([[1, 2]], eos=0), seq_len=4).shape == (0, 4)


def _text_config(text_world, **changes) -> dict:
    raw = copy.deepcopy(text_world["raw"])
    for key, value in changes.items():
        raw["corpus"]["text"][key] = value
    return validate_config(raw)


def test_fetch_takes_only_the_shards_the_budget_needs(text_world, tmp_path):
    config = _text_config(text_world)
    settings = text_fetch_settings(config)
    # micro budget: 7,680 tokens in 31 kept positions of each 32 = 248 rows, over at most 7 passes: 36 rows of 32
    # tokens; plus 256 evaluation tokens, with a 25% margin
    assert settings["needed_tokens"] == int((36 * 32 + 256) * 1.25) == 1760
    found = fetch_text(settings, text_world["cache"], offline=True, pointer=tmp_path / "source.json")
    shards = [Path(path).name for path in found["files"]]
    assert shards == [path.name for path in text_world["shards"][: len(shards)]]
    assert len(shards) < len(text_world["shards"])  # the estimate was met before the last shard
    assert found["estimated_tokens"] >= settings["needed_tokens"]
    assert json.loads((tmp_path / "source.json").read_text()) == found


def test_a_dataset_without_matching_shards_is_named(text_world, tmp_path):
    config = _text_config(text_world, dataset={"repo": "featurebirth-test/planted-text", "files": "data/*.parquet"})
    with pytest.raises(
        TextSourceError, match=r"no file of featurebirth-test/planted-text@main matches 'data/\*\.parquet'"
    ):
        fetch_text(text_fetch_settings(config), text_world["cache"], offline=True, pointer=tmp_path / "p.json")


def test_a_dataset_missing_from_the_cache_fails_offline(text_world, tmp_path):
    config = _text_config(text_world, dataset={"repo": "featurebirth-test/absent", "files": "*.jsonl"})
    with pytest.raises(Exception, match="featurebirth-test/absent|local_files_only|cannot find"):
        fetch_text(text_fetch_settings(config), text_world["cache"], offline=True, pointer=tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


def test_local_files_and_an_empty_text(text_world, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    raw = copy.deepcopy(text_world["raw"])
    raw["corpus"]["text"].pop("dataset")
    raw["corpus"]["text"]["files"] = [str(empty)]
    config = validate_config(raw)
    with pytest.raises(TextSourceError, match="hold no text"):
        fetch_text(text_fetch_settings(config), text_world["cache"], offline=True, pointer=tmp_path / "p.json")
    config["corpus"]["text"]["files"] = [str(tmp_path / "nothing-*.txt")]
    with pytest.raises(TextSourceError, match=r"corpus.text.files: '.*nothing-\*\.txt' names no file"):
        fetch_text(text_fetch_settings(config), text_world["cache"], offline=True, pointer=tmp_path / "p.json")


@pytest.fixture(scope="module")
def tokenized(text_world, tmp_path_factory) -> tuple[dict, dict, Path]:
    config = _text_config(text_world)
    results = tmp_path_factory.mktemp("text")
    pointer = Path(layout.corpus_file(results, "text_source"))
    fetch_text(text_fetch_settings(config), text_world["cache"], offline=True, pointer=pointer)
    tokenizer_dir = sorted((text_world["cache"] / "models--featurebirth-test--tiny-neox" / "snapshots").iterdir())[0]
    outputs = {part: Path(layout.corpus_file(results, f"text_{part}")) for part in ("sae", "eval", "probe")}
    sizes = tokenize_text(pointer, load_tokenizer(tokenizer_dir), text_tokenize_settings(config), outputs)
    return config, sizes, results


def test_tokenized_parts_are_packed_disjoint_documents(tokenized):
    config, sizes, results = tokenized
    rows = {}
    for part in ("sae", "eval", "probe"):
        with h5py.File(layout.corpus_file(results, f"text_{part}")) as handle:
            ids = handle[part][:]
            assert ids.shape[1] == 32 and ids.size == sizes[part] == handle.attrs["tokens"]
            assert handle.attrs["documents"] == {"eval": 10, "probe": 5}.get(part, handle.attrs["documents"])
            rows[part] = {tuple(row) for row in ids}
            eos = handle.attrs["eos"]
    # each document is 32 words and one EOS: 33 tokens, packed without padding
    assert sizes["eval"] == (10 * 33 // 32) * 32 and sizes["probe"] == (5 * 33 // 32) * 32
    assert not rows["eval"] & rows["sae"] and not rows["probe"] & rows["sae"]
    assert all(row.count(eos) >= 0 for row in rows["sae"]) and any(eos in row for row in rows["sae"])


def test_the_sae_part_is_tokenized_only_as_far_as_the_largest_budget_reads(
    text_world, tokenized, tmp_path, monkeypatch
):
    config, sizes, _ = tokenized
    settings = text_tokenize_settings(config)
    # the rows the SAE job reads per pass (ceil(ceil(7680 / 31) / 7) = 36 of 32 tokens), FETCH_MARGIN = 1.25 on top
    assert settings["sae_tokens"] == int(36 * 32 * 1.25) == 1440
    pointer = Path(layout.corpus_file(tokenized[2], "text_source"))
    tokenizer = load_tokenizer(
        sorted((text_world["cache"] / "models--featurebirth-test--tiny-neox" / "snapshots").iterdir())[0]
    )
    outputs = {part: tmp_path / f"{part}.h5" for part in ("sae", "eval", "probe")}
    monkeypatch.setattr("featurebirth.text.TOKENIZE_BATCH", 8)
    capped = tokenize_text(pointer, tokenizer, {**settings, "sae_tokens": 1000}, outputs)
    # documents of 33 tokens (32 words and EOS), 8 a batch: the 4th batch passes 1000 (4 x 8 x 33 = 1056 tokens),
    # packed into 33 rows of 32; the other SAE documents are never tokenized
    with h5py.File(outputs["sae"]) as handle:
        assert handle.attrs["documents"] == 32 and handle[SAE_SPLIT].shape == (33, 32)
    assert capped["sae"] == 1056 < sizes["sae"]
    assert capped["eval"] == sizes["eval"] and capped["probe"] == sizes["probe"]


def test_budget_checks_name_the_model_and_both_figures(tokenized, text_world, tmp_path):
    config, sizes, results = tokenized
    split = Path(layout.corpus_file(results, "text_sae"))
    evaluation = Path(layout.corpus_file(results, "text_eval"))
    tokenizer = load_tokenizer(
        sorted((text_world["cache"] / "models--featurebirth-test--tiny-neox" / "snapshots").iterdir())[0]
    )
    distinct = sizes["sae"] // 32 * 31
    settings = text_check_settings(config, "tiny-neox")
    assert settings["budget"] == {"tokens": 7680, "max_epochs": 7, "batch_size": 64, "updates": 120}
    checked = check_text(split, evaluation, tokenizer, settings, "tiny-neox", tmp_path / "ok.json")
    assert json.loads((tmp_path / "ok.json").read_text()) == checked and checked["distinct_tokens"] == distinct
    # a stream buffer of 100 tokens holds 3 rows (93 kept tokens): one batch of 64 a chunk, 29 skipped, so the 120
    # updates read 120 chunks x 3 = 360 rows, more than 7 passes over the part's rows: refused, not wrapped
    rows = distinct // 31
    assert 360 > 7 * rows
    streamed = {**settings, "buffer": {"mode": "stream", "buffer_tokens": 100}}
    with pytest.raises(BudgetError, match=rf"buffer_tokens = 100; 29 tokens .* reads 360 rows .* over the {rows} rows"):
        check_text(split, evaluation, tokenizer, streamed, "tiny-neox", tmp_path / "no.json")
    settings["budget"] = {**settings["budget"], "tokens": distinct * 2 + 1, "max_epochs": 2}
    with pytest.raises(
        BudgetError,
        match=f"models.tiny-neox.sae.tokens = {distinct * 2 + 1} is more than .* over the {distinct} training tokens",
    ):
        check_text(split, evaluation, tokenizer, settings, "tiny-neox", tmp_path / "no.json")
    assert not (tmp_path / "no.json").exists()


BAD_TEXT_CONFIGS = {
    "neither files nor dataset": (lambda c: c["corpus"]["text"].pop("dataset"), "corpus.text", "exactly one of"),
    "both files and dataset": (lambda c: c["corpus"]["text"].update(files=["a.txt"]), "corpus.text", "exactly one of"),
    "tokenizer not a model": (
        lambda c: c["corpus"]["text"].update(tokenizer="gpt2"),
        "corpus.text.tokenizer",
        "'gpt2' is not a configured model",
    ),
    "toy model on text": (
        lambda c: c["models"].update(toy={"source": "toy", "d_model": 16, "n_layers": 2, "n_heads": 2}),
        "corpus.source",
        "toy model(s) ['toy']",
    ),
    "dataset without files": (
        lambda c: c["corpus"]["text"]["dataset"].pop("files"),
        "corpus.text.dataset",
        "'files' is a required property",
    ),
}


@pytest.mark.parametrize("name", BAD_TEXT_CONFIGS)
def test_bad_text_config_names_the_key(text_world, name):
    edit, key, fragment = BAD_TEXT_CONFIGS[name]
    raw = copy.deepcopy(text_world["raw"])
    edit(raw)
    with pytest.raises(ConfigError) as caught:
        validate_config(raw)
    assert caught.value.key == key and fragment in str(caught.value)


def test_a_text_short_of_the_budgets_is_refused_with_the_shortfall(text_world, tmp_path):
    settings = text_fetch_settings(_text_config(text_world))
    settings["needed_tokens"] = 10**6
    with pytest.raises(TextSourceError, match=r"all 3 file\(s\) hold about \d+ tokens, fewer than the 1000000"):
        fetch_text(settings, text_world["cache"], offline=True, pointer=tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


def test_a_file_named_twice_is_read_once(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    assert local_files([str(tmp_path / "*.txt"), str(tmp_path / "a.txt")]) == [(tmp_path / "a.txt").resolve()]


def test_a_model_with_another_tokenizer_is_refused(tokenized, text_world, tmp_path):
    config, _, results = tokenized
    snapshot = sorted((text_world["cache"] / "models--featurebirth-test--tiny-neox" / "snapshots").iterdir())[0]
    other = load_tokenizer(snapshot)
    other.add_tokens(["zzzz"])
    with pytest.raises(TextSourceError, match="model 'tiny-neox': its tokenizer differs from the one that tokenized"):
        check_text(
            Path(layout.corpus_file(results, "text_sae")),
            Path(layout.corpus_file(results, "text_eval")),
            other,
            text_check_settings(config, "tiny-neox"),
            "tiny-neox",
            tmp_path / "no.json",
        )
    assert not (tmp_path / "no.json").exists()


def test_evaluation_tokens_beyond_the_evaluation_documents_are_refused(tokenized, text_world, tmp_path):
    config, sizes, results = tokenized
    snapshot = sorted((text_world["cache"] / "models--featurebirth-test--tiny-neox" / "snapshots").iterdir())[0]
    settings = {**text_check_settings(config, "tiny-neox"), "evaluation_tokens": sizes["eval"] + 1}
    with pytest.raises(
        TextSourceError, match=f"evaluation.tokens = {sizes['eval'] + 1} is more than the {sizes['eval']}"
    ):
        check_text(
            Path(layout.corpus_file(results, "text_sae")),
            Path(layout.corpus_file(results, "text_eval")),
            load_tokenizer(snapshot),
            settings,
            "tiny-neox",
            tmp_path / "no.json",
        )
