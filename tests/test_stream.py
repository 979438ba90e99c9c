"""Streamed SAE training: the chunk schedule, stream vs memory mode, layer groups vs one layer, and resuming."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import JOB_ENV

from featurebirth import layout
from featurebirth.activations import forward_chunks, layer_activations, token_rows
from featurebirth.config import sae_training_settings, token_settings
from featurebirth.corpus import SAE_SPLIT, SPLIT_FILES
from featurebirth.io import read_json
from featurebirth.layout import cell_name
from featurebirth.models import load_model, load_truncated
from featurebirth.resume import TrainingInterrupted, TrainingState
from featurebirth.sae import quality, train_group
from featurebirth.stream import ChunkSizeError, chunk_schedule, rows_wanted

CPU = torch.device("cpu")
SEQ_LEN, KEPT = 32, 31  # the micro corpus's rows and the positions kept of each (exclude_first = 1)
BUFFER = 256  # 8 rows x 31 = 248 tokens a chunk: 3 batches of 64


def test_schedule_chunks_wrap_and_cut_whole_batches():
    schedule = chunk_schedule("stream", 256, 40, 31, 64, seed=3)
    assert schedule.rows_per_chunk == 8 and schedule.batches_per_chunk == 3  # 248 tokens: 56 are not trained on
    assert schedule.rows(0).tolist() == list(range(8))
    assert schedule.rows(4).tolist() == list(range(32, 40))
    assert schedule.rows(5).tolist() == list(range(8))  # the second pass starts over
    assert schedule.position(0) == (0, 0) and schedule.position(7) == (2, 1)
    assert schedule.rows_read(120) == 40 * 8  # 120 updates = 40 chunks of 8 rows = 8 passes over 40
    order = schedule.order(2)
    assert len(order) == 192 and len(set(order.tolist())) == 192 and int(order.max()) < 248
    assert np.array_equal(
        order, chunk_schedule("stream", 256, 40, 31, 64, seed=3).order(2)
    )  # a function of (seed, chunk)
    assert not np.array_equal(order, schedule.order(3))
    assert not np.array_equal(order, chunk_schedule("stream", 256, 40, 31, 64, seed=4).order(2))


def test_memory_mode_holds_every_row_and_the_buffer_never_exceeds_the_text():
    memory = chunk_schedule("memory", 256, 40, 31, 64, seed=0)
    assert memory.rows_per_chunk == 40 and memory.batches_per_chunk == 1240 // 64 == 19
    assert memory.rows_run(120) == 40  # one chunk of every row, run once and reused for all 6.3 passes
    assert chunk_schedule("stream", 256, 40, 31, 64, seed=0).rows_run(120) == 320  # 40 chunks of 8 rows, each run
    assert chunk_schedule("stream", 10**9, 40, 31, 64, seed=0).rows_per_chunk == 40


def test_a_buffer_below_one_batch_is_refused_naming_the_keys():
    with pytest.raises(ChunkSizeError, match=r"sae\.batch_size = 64.*activations\.buffer_tokens \(now 40\)"):
        chunk_schedule("stream", 40, 40, 31, 64, seed=0)


def test_rows_wanted_covers_the_budget():
    recipe = {"tokens": 64 * 120, "batch_size": 64, "updates": 120}
    assert rows_wanted({"mode": "memory", "buffer_tokens": BUFFER}, recipe, KEPT) == -(-7680 // 31) == 248
    # stream: 120 updates / 3 batches per chunk = 40 chunks of 8 rows: more rows than 7680 / 31, as chunk
    # remainders (56 tokens each) are skipped
    assert rows_wanted({"mode": "stream", "buffer_tokens": BUFFER}, recipe, KEPT) == 320


@pytest.fixture(scope="module")
def sae_ids(micro, corpus, checkpoint) -> torch.Tensor:
    """The micro SAE split's 40 rows of token ids."""
    return token_rows(corpus("tokens"), checkpoint, SAE_SPLIT, 40 * SEQ_LEN, SEQ_LEN)


@pytest.fixture(scope="module")
def recipe(micro) -> dict:
    return sae_training_settings(micro, "tiny-a")["sae"]  # 120 updates of 64 tokens, TopK k=4, 64 features


def train_streamed(checkpoint, ids, layers, recipe, mode=BUFFER, state=None, source_wrapper=None, seeds=(0,)):
    """Train the SAEs of `layers` x `seeds` from the truncated checkpoint, streamed with a buffer of `mode` tokens (or
    memory); keyed by (layer, seed)."""
    network, _ = load_truncated(checkpoint, CPU, torch.float32, max(layers))
    source = forward_chunks(network, ids, layers, 16, 1)
    name, tokens = ("memory", 0) if mode == "memory" else ("stream", mode)
    schedule = chunk_schedule(name, tokens, len(ids), KEPT, recipe["batch_size"], recipe["seed"])
    cells = {(layer, seed): cell_name("tiny-a", 6, layer, seed) for layer in layers for seed in seeds}
    return train_group(
        source_wrapper(source) if source_wrapper else source, schedule, cells, recipe, CPU, model="tiny-a", state=state
    )


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(tensor, b.state_dict()[name]) for name, tensor in a.state_dict().items())


def test_one_job_for_a_group_trains_the_same_saes_as_one_job_per_layer(checkpoint, sae_ids, recipe):
    group = train_streamed(checkpoint, sae_ids, [0, 1], recipe)
    for layer in (0, 1):
        alone = train_streamed(checkpoint, sae_ids, [layer], recipe)
        assert same_weights(group[layer, 0][0], alone[layer, 0][0]), layer
        assert group[layer, 0][1]["norm_factor"] == alone[layer, 0][1]["norm_factor"]


def test_seeds_train_in_lockstep_each_as_it_would_alone(checkpoint, sae_ids, recipe):
    """One job of seeds 0 and 5: seed 0's SAE is the one a job of seed 0 alone trains (so adding a seed retrains no
    SAE of the first), seed 5's the one a job of seed 5 alone trains, and the two differ (initialisation, order)."""
    both = train_streamed(checkpoint, sae_ids, [1], recipe, seeds=(0, 5))
    first = train_streamed(checkpoint, sae_ids, [1], recipe)
    other = train_streamed(checkpoint, sae_ids, [1], {**recipe, "seed": 5}, seeds=(5,))
    assert same_weights(both[1, 0][0], first[1, 0][0]) and same_weights(both[1, 5][0], other[1, 5][0])
    assert not torch.equal(both[1, 0][0].encoder.weight, both[1, 5][0].encoder.weight)
    assert both[1, 0][1]["seed"] == 0 and both[1, 5][1]["seed"] == 5
    schedule = chunk_schedule("stream", BUFFER, len(sae_ids), KEPT, recipe["batch_size"], 0)
    assert not np.array_equal(schedule.order(0), replace(schedule, seed=5).order(0))
    # the same chunks (one forward pass serves every seed), each seed's own order of their tokens
    assert np.array_equal(schedule.rows(3), replace(schedule, seed=5).rows(3))


def test_the_truncated_model_gives_the_full_models_activations(checkpoint, sae_ids):
    full = layer_activations(load_model(checkpoint, CPU), sae_ids[:4], [0], 2, 1)[0]
    truncated, metadata = load_truncated(checkpoint, CPU, torch.float32, 0)
    assert len(truncated.gpt_neox.layers) == 1 and truncated.embed_out is None
    assert torch.equal(layer_activations(truncated, sae_ids[:4], [0], 2, 1)[0], full)
    # the metadata describes the whole checkpoint, taken before truncating
    assert metadata["n_layers"] == 2 and metadata["n_params"] == sum(
        p.numel() for p in load_model(checkpoint, CPU).parameters()
    )


def test_stream_and_memory_modes_train_saes_of_the_same_quality(micro, corpus, checkpoint, sae_ids, recipe):
    """Same tokens, same budget: memory mode (one chunk of all 40 rows, re-shuffled each pass) and stream mode
    (8-row chunks); variance explained on the held-out split within 0.02, both above 0.7."""
    held_out = token_rows(corpus(SPLIT_FILES["eval"][0]), checkpoint, "eval", micro["evaluation"]["tokens"], SEQ_LEN)
    x = layer_activations(load_model(checkpoint, CPU), held_out, [1], 16, token_settings(micro)["exclude_first"])[1]
    streamed = quality(train_streamed(checkpoint, sae_ids, [1], recipe)[1, 0][0], x.float())
    held = quality(train_streamed(checkpoint, sae_ids, [1], recipe, mode="memory")[1, 0][0], x.float())
    assert streamed["variance_explained"] > 0.7 and held["variance_explained"] > 0.7, (streamed, held)
    assert abs(streamed["variance_explained"] - held["variance_explained"]) < 0.02, (streamed, held)


def sigterm_at_chunk(chunk_rows: int):
    """A source wrapper that sends this process SIGTERM while the chunk starting at row `chunk_rows` is read."""

    def wrap(source):
        def wrapped(rows: np.ndarray):
            if rows[0] == chunk_rows:
                os.kill(os.getpid(), signal.SIGTERM)
            return source(rows)

        return wrapped

    return wrap


def test_sigterm_saves_the_state_and_a_rerun_resumes_to_identical_saes(checkpoint, sae_ids, recipe, tmp_path, caplog):
    state_path = tmp_path / "group-0-1.training-state.pt"
    state = TrainingState(state_path, "key", save_every_minutes=60)  # never due: only SIGTERM saves
    with pytest.raises(TrainingInterrupted) as stopped:
        train_streamed(checkpoint, sae_ids, [0, 1], recipe, state=state, source_wrapper=sigterm_at_chunk(16))
    # rows 16.. are chunk 2 (updates 6, 7, 8): SIGTERM lands while it loads, so update 6 completes, then it saves
    assert stopped.value.update == 7 and stopped.value.code == 128 + signal.SIGTERM
    assert state_path.is_file() and torch.load(state_path, weights_only=False)["update"] == 7
    with caplog.at_level("INFO"):
        resumed = train_streamed(checkpoint, sae_ids, [0, 1], recipe, state=TrainingState(state_path, "key", 60))
    assert "resumed from SAE update 7 of 120" in caplog.text
    assert resumed[0, 0][2]["resumed_from_update"] == 7
    uninterrupted = train_streamed(checkpoint, sae_ids, [0, 1], recipe)
    for unit in ((0, 0), (1, 0)):
        assert same_weights(resumed[unit][0], uninterrupted[unit][0]), unit
        assert resumed[unit][2]["dead_fraction_train"] == uninterrupted[unit][2]["dead_fraction_train"]


def test_a_state_saved_under_other_settings_is_discarded(checkpoint, sae_ids, recipe, tmp_path, caplog):
    state_path = tmp_path / "group-1.training-state.pt"
    TrainingState(state_path, "other-settings", 60).save({"update": 50})
    with caplog.at_level("WARNING"):
        trained = train_streamed(checkpoint, sae_ids, [1], recipe, state=TrainingState(state_path, "key", 60))
    assert "discarding the training state" in caplog.text
    assert trained[1, 0][2]["resumed_from_update"] == 0


def train_saes_command(checkpoint, tokens, settings, manifest, save_every_minutes) -> list[str]:
    import json

    return [
        sys.executable, "-m", "featurebirth", "--threads", "1", "train-saes", "--model", "tiny-a", "--step", "6",
        "--checkpoint", str(checkpoint), "--tokens", str(tokens), "--settings", json.dumps(settings),
        "--manifest", str(manifest), "--save-every-minutes", str(save_every_minutes),
    ]  # fmt: skip


@pytest.mark.workflow
def test_an_sae_job_killed_mid_training_resumes_and_matches_an_uninterrupted_run(micro, corpus, checkpoint, tmp_path):
    """SIGKILL (no chance to save) mid-training; the rerun resumes from the last periodic save, runs fewer updates
    and writes SAEs identical to an uninterrupted job's; nothing that looks finished exists after the kill."""
    settings = sae_training_settings(micro, "tiny-a")
    settings["sae"] = {**settings["sae"], "tokens": 64 * 3000, "updates": 3000, "max_epochs": 1000}
    settings["buffer"] = {"mode": "stream", "buffer_tokens": BUFFER}
    killed = layout.sae_group(tmp_path / "killed", "tiny-a", 6, "0-1")
    state = layout.training_state(killed)
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        job = subprocess.Popen(
            train_saes_command(checkpoint, corpus("tokens"), settings, killed, 0.001),
            stdout=log, stderr=subprocess.STDOUT, env=JOB_ENV,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while "saved the training state at SAE update" not in log_path.read_text():
            assert job.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(0.5)
        job.send_signal(signal.SIGKILL)
        job.wait()
    saved_at = torch.load(state, weights_only=False)["update"]
    assert 0 < saved_at < 3000
    assert not os.path.exists(killed) and not list((tmp_path / "killed").rglob(layout.SAE_WEIGHTS))
    rerun = subprocess.run(
        train_saes_command(checkpoint, corpus("tokens"), settings, killed, 0.001),
        capture_output=True, text=True, env=JOB_ENV,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    layer0 = cell_name("tiny-a", 6, 0)
    resumed_at = read_json(killed)["cells"][layer0]["resumed_from_update"]
    assert resumed_at >= saved_at and f"resumed from SAE update {resumed_at} of 3000" in rerun.stderr
    assert not os.path.exists(state)  # removed when the job finishes
    fresh = layout.sae_group(tmp_path / "fresh", "tiny-a", 6, "0-1")
    whole = subprocess.run(
        train_saes_command(checkpoint, corpus("tokens"), settings, fresh, 60),
        capture_output=True,
        text=True,
        env=JOB_ENV,
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert read_json(fresh)["cells"][layer0]["resumed_from_update"] == 0
    for unit, folder in layout.group_sae_dirs(killed).items():
        resumed = torch.load(os.path.join(folder, layout.SAE_WEIGHTS))
        uninterrupted = torch.load(os.path.join(layout.group_sae_dirs(fresh)[unit], layout.SAE_WEIGHTS))
        assert resumed.keys() == uninterrupted.keys()
        for name, tensor in resumed.items():
            assert torch.equal(tensor, uninterrupted[name]), (unit, name)


def test_an_unreadable_state_or_a_save_killed_half_way_does_not_block_the_retry(tmp_path, caplog):
    state_path = tmp_path / "group-1.training-state.pt"
    state_path.write_bytes(b"cut short by a node crash")
    leftover = tmp_path / f".tmp-1234abcd-{state_path.name}"
    leftover.write_bytes(b"half a save")
    state = TrainingState(state_path, "key", 60)
    assert not leftover.exists()  # a killed save's temporary file is removed when the next attempt starts
    with caplog.at_level("WARNING"):
        assert state.load() is None
    assert "unreadable" in caplog.text and not state_path.exists()
