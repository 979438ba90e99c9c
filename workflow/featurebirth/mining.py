"""Natural probes: contexts of the lexicon words mined from the probe-mining part of real text, with controls.

A context is a window of `context` token ids of the probe-mining part ending at an occurrence of a word: the word's
token is the window's last position (the target). An occurrence counts when the token stands as a whole word: the
next token does not continue it (" dog" + "s" is not an occurrence of dog; " dog" + "'s" is), and the window stays
inside the word's document (no EOS in it). A word's contexts are up to `per_word` of its occurrences, spread evenly
over them (so over the documents). No document of the probe-mining part is in the SAE-training or evaluation parts
(text.split_documents), and the mining reads that part only.

Controls are words outside the lexicon, matched in frequency: the candidates are the tokens of the part that stand
for a lowercase word on their own (the token is the word's single token after a space, as for the lexicon), and each
lexicon word with contexts, from the most frequent down (ties in lexicon order), takes the unused candidate whose
count of occurrences (as above, in the probe-mining part) is nearest to its own on a log scale (ties: the lower token
id). So the controls'
frequencies follow the lexicon words' one for one, and each control is mined like a lexicon word. A candidate may
still belong to a category that the lexicon leaves out (a matched " horse" where animals lack it): it is a negative
all the same, which can only lower a category's score.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import h5py
import numpy as np

from .io import atomic_path, write_json
from .layout import CONTROL
from .lexicon import check_lexicon, word_token_ids

WORD = re.compile(r"[a-z]+")  # a control candidate's word: lowercase letters, as the lexicon's words (schema)


def continuations(tokenizer, tokens: np.ndarray, reference: int) -> np.ndarray:
    """Bool over token ids up to tokens.max(): does the token, right after the word token `reference`, continue it?

    Decided on the decoded pair (the text after the reference word starts with a letter or digit), so it holds for a
    byte-level BPE (" dog" + "s") and for a word-level tokenizer (which decodes every token as a word of its own).
    """
    head = tokenizer.decode([reference], clean_up_tokenization_spaces=False)
    continues = np.zeros(int(tokens.max()) + 1, dtype=bool)
    for token in np.unique(tokens):
        pair = tokenizer.decode([reference, int(token)], clean_up_tokenization_spaces=False)
        continues[token] = pair[len(head) : len(head) + 1].isalnum()
    return continues


def eligible(flat: np.ndarray, context: int, eos: int, continues: np.ndarray) -> np.ndarray:
    """Bool per position of `flat`: a whole-word occurrence would have a full window in its document there."""
    eos_seen = np.concatenate([[0], np.cumsum(flat == eos)])
    ok = np.zeros(len(flat), dtype=bool)
    ends = np.arange(context - 1, len(flat) - 1)  # the last position has no next token to tell a whole word
    ok[ends] = (eos_seen[ends + 1] - eos_seen[ends + 1 - context] == 0) & ~continues[flat[ends + 1]]
    return ok


def spread(positions: np.ndarray, n: int) -> np.ndarray:
    """At most n of the positions, evenly spaced over them (all of them when there are n or fewer)."""
    if len(positions) <= n:
        return positions
    return positions[np.unique(np.linspace(0, len(positions) - 1, n).round().astype(int))]


def control_candidates(tokenizer, tokens: np.ndarray, excluded: set[int]) -> dict[int, str]:
    """Token id -> word of the part's tokens that are a lowercase word's single token (after a space), not excluded."""
    found = {}
    for token in np.unique(tokens).tolist():
        if token in excluded:
            continue
        word = tokenizer.decode([token], clean_up_tokenization_spaces=False).strip()
        if WORD.fullmatch(word) and word_token_ids(tokenizer, word) == [token]:
            found[token] = word
    return found


def match_controls(counts: dict[str, int], candidates: dict[str, int]) -> dict[str, str]:
    """Lexicon word -> control word: greedily, most frequent word first, the unused candidate nearest on a log scale.

    `counts` and `candidates` give occurrences per word; words with none get no control; ties go to the earlier
    candidate (candidates are given in token-id order).
    """
    free = dict(candidates)
    matched = {}
    for word in sorted((w for w in counts if counts[w] > 0), key=lambda w: -counts[w]):
        if not free:
            break
        target = math.log(counts[word])
        control = min(free, key=lambda c: abs(math.log(free[c]) - target))
        matched[word] = control
        del free[control]
    return matched


def mine_probes(probe_part: Path, tokenizer, settings: dict, out: Path, record: Path) -> dict:
    """Mine every lexicon word's contexts and its frequency-matched control's from the probe-mining part.

    Writes the windows (token ids [items, context], the category (CONTROL for controls) and word of each) to `out`
    and, to `record`, every word's occurrences and contexts, the controls and the categories left with fewer than
    two words that have contexts (held-out scoring cannot score those). Returns the record.
    """
    with h5py.File(probe_part, "r") as handle:
        flat = next(iter(handle.values()))[:].ravel()
        eos, fingerprint = int(handle.attrs["eos"]), str(handle.attrs["tokenizer"])
    categories, context = settings["categories"], settings["context"]
    word_ids = check_lexicon(tokenizer, categories, "the text's tokenizer (corpus.text.tokenizer)")
    ok = eligible(flat, context, eos, continuations(tokenizer, flat, next(iter(word_ids.values()))))
    counts = np.bincount(flat[ok], minlength=int(flat.max()) + 1)
    occurrences = {word: int(counts[token]) for word, token in word_ids.items()}
    candidates = {
        word: token for token, word in control_candidates(tokenizer, flat[ok], set(word_ids.values())).items()
    }
    controls = match_controls(occurrences, {word: int(counts[token]) for word, token in candidates.items()})
    owner = {word: category for category, words in categories.items() for word in words}
    targets = [(owner[w], w, t) for w, t in word_ids.items()] + [(CONTROL, c, candidates[c]) for c in controls.values()]
    ids, labels, words = windows(flat, ok, targets, context, settings["per_word"])
    if not np.isin(labels, list(categories)).any():
        raise ValueError(
            f"no lexicon word occurs in {probe_part} with {context - 1} tokens of its document before it: "
            "hold out more probe documents (corpus.text.probe_documents) or shorten probes.mined_context"
        )
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("ids", data=ids, track_times=False)
        handle.create_dataset("category", data=np.array(labels, dtype=object), dtype=h5py.string_dtype())
        handle.create_dataset("word", data=np.array(words, dtype=object), dtype=h5py.string_dtype())
        handle.attrs.update({"context": context, "tokenizer": fingerprint})
    mined = {word: int((words == word).sum()) for word in [*word_ids, *controls.values()]}
    control_counts = {c: int(counts[candidates[c]]) for c in controls.values()}
    found = mining_record(categories, occurrences, mined, controls, control_counts)
    write_json({"probe_tokens": int(flat.size), "context": context, "per_word": settings["per_word"], **found}, record)
    return found


def windows(
    flat: np.ndarray, ok: np.ndarray, targets: list[tuple[str, str, int]], context: int, per_word: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (category, word, token) target's windows: int32 ids [items, context] ending at up to `per_word` of its
    eligible occurrences, and the category and word of every item."""
    found, labels, words = [], [], []
    for category, word, token in targets:
        ends = spread(np.flatnonzero(ok & (flat == token)), per_word)
        found += [flat[end + 1 - context : end + 1] for end in ends]
        labels += [category] * len(ends)
        words += [word] * len(ends)
    ids = np.stack(found).astype(np.int32) if found else np.zeros((0, context), dtype=np.int32)
    return ids, np.array(labels, dtype=str), np.array(words, dtype=str)


def mining_record(
    categories: dict, occurrences: dict[str, int], mined: dict[str, int], controls: dict[str, str], control_counts: dict
) -> dict:
    """What the mining found: per word its category, occurrences, contexts and control; per category its words with
    contexts; the categories with fewer than two such words."""
    words = {
        word: {"category": category, "occurrences": occurrences[word], "contexts": mined[word]}
        | ({"control": controls[word]} if word in controls else {})
        for category, members in categories.items()
        for word in members
    }
    matched = {
        control: {"matched_to": word, "occurrences": control_counts[control], "contexts": mined[control]}
        for word, control in controls.items()
    }
    with_contexts = {c: sum(words[w]["contexts"] > 0 for w in members) for c, members in categories.items()}
    return {
        "words": words,
        "controls": matched,
        "words_with_contexts": with_contexts,
        "too_few_words": sorted(c for c, n in with_contexts.items() if n < 2),
    }


def read_mined(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mined windows [items, context] (int64), their categories and words."""
    with h5py.File(path, "r") as handle:
        ids = handle["ids"][:].astype(np.int64)
        labels = handle["category"].asstr()[:]
        words = handle["word"].asstr()[:]
    return ids, np.asarray(labels, dtype=object).astype(str), np.asarray(words, dtype=object).astype(str)
