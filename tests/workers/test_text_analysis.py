"""The built-in text analysis (seed 003): word count, most frequent words, and what counts as a
word or a sentence."""

from __future__ import annotations

from taskorch.workers.text_analysis import analyze, words


def test_words_keep_inner_apostrophes_and_hyphens_and_are_lower_cased() -> None:
    assert words("Don\u2019t stop: AI-powered tools, don't they? 42 _x_") == [
        "don't",
        "stop",
        "ai-powered",
        "tools",
        "don't",
        "they",
        "42",
        "x",
    ]


def test_top_words_are_the_most_frequent_content_words_ties_by_first_appearance() -> None:
    text = "The cat sat. The dog sat! A bird flew, and the cat ran? Dog dog."
    result = analyze(text, top_n=3)
    # "the", "a", "and" are stop words; dog 3, cat 2, sat 2 (sat first seen after cat).
    assert result["top_words"] == ["dog", "cat", "sat"]
    assert result["word_frequencies"] == {"dog": 3, "cat": 2, "sat": 2}
    assert result["word_count"] == 15
    assert result["sentence_count"] == 4
    assert result["character_count"] == len(text) and result["text"] == text


def test_numbers_count_as_words_but_are_never_top_words() -> None:
    result = analyze("2026 2026 2026 release release notes")
    assert result["word_count"] == 6
    assert result["top_words"] == ["release", "notes"]
    assert result["unique_words"] == 3


def test_a_last_sentence_without_a_full_stop_still_counts() -> None:
    assert analyze("One. Two")["sentence_count"] == 2
    assert analyze("One... Two!!")["sentence_count"] == 2
    assert analyze("   ")["sentence_count"] == 0


def test_empty_text_has_no_words() -> None:
    result = analyze("")
    assert result["word_count"] == 0 and result["top_words"] == []
    assert result["word_frequencies"] == {} and result["unique_words"] == 0
