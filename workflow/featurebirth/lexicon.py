"""The lexicon against a real tokenizer: every word one token, and each category's frequency in the text.

A word is looked at as it stands in running text, after a space (" dog"): that is how the probe templates and
the text present it to a byte-level BPE tokenizer such as GPT-NeoX's. The tokenizer is passed in (anything
callable like a Hugging Face tokenizer, with `decode`), so this module imports numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping

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
