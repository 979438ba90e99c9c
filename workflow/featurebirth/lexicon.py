"""The lexicon against a real tokenizer: every word one token, each category's frequency in the text, and
contexts mined from the text around the words.

A word is looked at as it stands in running text, after a space (" dog"): that is how the probe templates and
the text present it to a byte-level BPE tokenizer such as GPT-NeoX's. The tokenizer is passed in (anything
callable like a Hugging Face tokenizer, with `decode`), so this module imports numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

PER_MILLION = 1_000_000


class LexiconError(ValueError):
    """The lexicon does not fit a model's tokenizer: the message names the model and every word at fault."""


def word_token_ids(tokenizer, word: str) -> list[int]:
    """The token ids of `word` as it stands in running text (after a space), without special tokens."""
    return list(tokenizer(" " + word, add_special_tokens=False)["input_ids"])


def _words(spec) -> list[str]:
    """A category's words: from its config entry ({"words": [...]}) or a plain list."""
    return list(spec["words"] if isinstance(spec, Mapping) else spec)


def check_lexicon(tokenizer, categories: Mapping, model: str) -> dict[str, int]:
    """Every category word's single token id ({word: token_id}, in lexicon order), or raise LexiconError.

    A word that is not exactly one token is refused rather than scored on its last token: the last piece of a
    split word is often a generic suffix shared across categories (" saxophone" -> " sax" + "ophone", " plumber"
    -> " pl" + "umber"), so its activation would blur the category score. The error names the model and lists
    every such word with its category and its token pieces, so the lexicon can be fixed in one go. Two words
    that come out as the same token are refused too (they could not be told apart).

    `categories` maps a category to its config entry ({"words": [...]}) or to a plain list of words, so the
    filler words can be checked the same way: check_lexicon(tokenizer, {"filler_words": fillers}, model).
    """
    found: dict[str, int] = {}
    owner: dict[int, tuple[str, str]] = {}
    problems = []
    for category, spec in categories.items():
        for word in _words(spec):
            ids = word_token_ids(tokenizer, word)
            if len(ids) != 1:
                pieces = [tokenizer.decode([i]) for i in ids]
                problems.append(f"'{word}' ({category}): {len(ids)} tokens {pieces}")
            elif ids[0] == tokenizer.unk_token_id:
                problems.append(f"'{word}' ({category}): not in the vocabulary (the unknown token)")
            elif ids[0] in owner:
                other, other_category = owner[ids[0]]
                problems.append(f"'{word}' ({category}): the same token {ids[0]} as '{other}' ({other_category})")
            else:
                owner[ids[0]] = (word, category)
                found[word] = ids[0]
    if problems:
        raise LexiconError(
            f"model '{model}': {len(problems)} lexicon word(s) are not one token of its tokenizer "
            "(each must be a single token after a space; a split word is refused, not scored on its last piece): "
            + "; ".join(problems)
        )
    return found


def category_frequencies(ids: np.ndarray, word_ids: Mapping[str, int], categories: Mapping) -> dict[str, float]:
    """Each category's occurrences per million tokens of `ids` (any shape), in category order.

    A category's count is the number of tokens in `ids` that are one of its words' token ids (`word_ids`, as
    check_lexicon returns them). The token also counts where it stands as the first piece of a longer word
    that the tokenizer splits (" fox" in " fox" + "es"); the shipped lexicon leaves out words for which that is
    common.
    """
    flat = np.asarray(ids).ravel()
    if flat.size == 0:
        raise ValueError("no tokens to count category frequencies in")
    if flat.min() < 0:
        raise ValueError(f"token ids must be non-negative, got {int(flat.min())}")
    counts = np.bincount(flat.astype(np.int64, copy=False))
    frequencies = {}
    for category, spec in categories.items():
        total = 0
        for word in _words(spec):
            if word not in word_ids:
                raise LexiconError(f"word '{word}' ({category}) has no checked token id (run check_lexicon first)")
            token = word_ids[word]
            total += int(counts[token]) if token < counts.size else 0
        frequencies[category] = total * PER_MILLION / flat.size
    return frequencies


@dataclass(frozen=True)
class MinedContext:
    """One occurrence of a lexicon word in the text: `tokens` are the `width` token ids before it, then the
    word's own token (so tokens[-1] == token_id); the word stands at ids[row, position]."""

    word: str
    token_id: int
    row: int
    position: int
    tokens: tuple[int, ...]


def mine_contexts(
    ids: np.ndarray,
    word_ids: Mapping[str, int],
    per_word: int,
    width: int,
    seed: int,
    eos: int | None = None,
) -> list[MinedContext]:
    """Up to `per_word` occurrences of each word in `ids` with their `width` tokens of left context: a building
    block for probes drawn from natural text (e.g. from the probe-mining part).

    `ids` is 1-D (one stream) or 2-D (packed rows, [n_rows, seq_len]); a context never crosses a row, so only
    occurrences at least `width` tokens into their row qualify. With `eos` given, a context holding that token
    (a document boundary) is skipped too. Among the qualifying occurrences of a word, `per_word` are drawn
    without replacement by a generator seeded with (seed, the word's token id), so a word's contexts do not
    change when other words are added to or removed from the lexicon; a word with fewer occurrences gives all
    of them. Words come in `word_ids` order, each word's contexts in text order.
    """
    if per_word < 0 or width < 0:
        raise ValueError(f"per_word and width must be non-negative, got {per_word} and {width}")
    rows = np.asarray(ids)
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.ndim != 2:
        raise ValueError(f"token ids must be 1-D or 2-D, got shape {rows.shape}")
    wanted = np.fromiter(word_ids.values(), dtype=np.int64, count=len(word_ids))
    row_of, position_of = np.nonzero(np.isin(rows, wanted))
    keep = position_of >= width
    row_of, position_of = row_of[keep], position_of[keep]
    if eos is not None and width > 0 and row_of.size:
        # Prefix sums of EOS per row: a context [position - width, position) holds one if the sums differ.
        is_eos = np.zeros((rows.shape[0], rows.shape[1] + 1), dtype=np.int64)
        np.cumsum(rows == eos, axis=1, out=is_eos[:, 1:])
        clean = is_eos[row_of, position_of] == is_eos[row_of, position_of - width]
        row_of, position_of = row_of[clean], position_of[clean]
    tokens_at = rows[row_of, position_of]
    mined: list[MinedContext] = []
    for word, token in word_ids.items():
        hits = np.flatnonzero(tokens_at == token)  # in text order (np.nonzero is row-major)
        if hits.size > per_word:
            rng = np.random.default_rng([seed, int(token)])
            hits = np.sort(rng.choice(hits, size=per_word, replace=False))
        for hit in hits:
            row, position = int(row_of[hit]), int(position_of[hit])
            context = tuple(int(t) for t in rows[row, position - width : position + 1])
            mined.append(MinedContext(word, int(token), row, position, context))
    return mined
