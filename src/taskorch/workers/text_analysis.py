"""The built-in text analysis of seed 003: word count and most frequent words."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

TOP_WORDS = 5

# A word is a run of letters or digits, with inner apostrophes or hyphens ("don't", "AI-powered").
_WORD = re.compile(r"[^\W_]+(?:['\u2019\-][^\W_]+)*")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")

# Common English function words, which say nothing about what a text is about.
STOP_WORDS = frozenset(
    """
    a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each few for from further had hadn't has hasn't have haven't
    having he he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll
    i'm i've if in into is isn't it it's its itself just let's me more most mustn't my myself no
    nor not now of off on once only or other ought our ours ourselves out over own same shan't
    she she'd she'll she's should shouldn't so some such than that that's the their theirs them
    themselves then there there's these they they'd they'll they're they've this those through
    to too under until up very was wasn't we we'd we'll we're we've were weren't what what's
    when when's where where's which while who who's whom why why's will with won't would
    wouldn't you you'd you'll you're you've your yours yourself yourselves
    """.split()  # noqa: SIM905 - a word list reads better as text
)


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased, in order."""
    return [match.group(0).lower().replace("\u2019", "'") for match in _WORD.finditer(text)]


def analyze(text: str, *, top_n: int = TOP_WORDS) -> dict[str, Any]:
    """Counts the words of ``text`` and ranks its most frequent non-stop words.

    Ties are broken by first appearance, so the result is deterministic.

    Returns:
        ``text`` (echoed), ``word_count``, ``top_words`` (up to ``top_n``, most frequent
        first), ``word_frequencies`` of those words, ``unique_words``, ``character_count``
        and ``sentence_count``.
    """
    all_words = words(text)
    content = [w for w in all_words if w not in STOP_WORDS and not w.isdigit()]
    counts = Counter(content)
    first_seen: dict[str, int] = {}
    for index, word in enumerate(content):
        first_seen.setdefault(word, index)
    ranked = sorted(counts, key=lambda w: (-counts[w], first_seen[w]))[:top_n]
    sentences = len(_SENTENCE_END.findall(text.strip()))
    if text.strip() and not _SENTENCE_END.search(text.strip()[-1] + " "):
        sentences += 1
    return {
        "text": text,
        "word_count": len(all_words),
        "top_words": ranked,
        "word_frequencies": {w: counts[w] for w in ranked},
        "unique_words": len(set(all_words)),
        "character_count": len(text),
        "sentence_count": sentences,
    }
