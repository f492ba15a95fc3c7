import numpy as np
import pytest

from soma_ray.model import EOS_TOKEN, PAD_TOKEN, EmptyDataError, tokenize


def test_short_data_gets_eos_then_pad_at_the_offset_after_the_data():
    chunks = tokenize(b"abc", 6)
    assert chunks.tokens.tolist() == [[97, 98, 99, EOS_TOKEN, PAD_TOKEN, PAD_TOKEN]]
    assert chunks.positions.tolist() == [[0, 1, 2, 3, 3, 3]]
    assert chunks.targets.tolist() == [[98, 99, EOS_TOKEN, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN]]


def test_positions_are_global_and_eos_only_in_a_short_last_chunk():
    chunks = tokenize(bytes(range(10)), 4)
    assert chunks.tokens.shape == (3, 4)
    assert chunks.tokens.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, EOS_TOKEN, PAD_TOKEN]]
    assert chunks.positions.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 10]]
    # Targets shift within the chunk only: the last target is PAD even mid-data.
    assert chunks.targets[0].tolist() == [1, 2, 3, PAD_TOKEN]


def test_exact_multiple_has_no_eos():
    chunks = tokenize(b"x" * 8, 4)
    assert chunks.tokens.shape == (2, 4)
    assert EOS_TOKEN not in chunks.tokens and PAD_TOKEN not in chunks.tokens
    assert chunks.positions[1].tolist() == [4, 5, 6, 7]


def test_matches_a_direct_reading_of_the_spec():
    data = bytes(np.random.default_rng(1).integers(0, 256, 37, dtype=np.uint8))
    s = 8
    chunks = tokenize(data, s)
    for c in range(chunks.tokens.shape[0]):
        length = min(s, len(data) - c * s)
        for i in range(s):
            if i < length:
                assert (chunks.tokens[c, i], chunks.positions[c, i]) == (data[c * s + i], c * s + i)
            else:
                expected = EOS_TOKEN if (i == length and c == chunks.tokens.shape[0] - 1) else PAD_TOKEN
                assert (chunks.tokens[c, i], chunks.positions[c, i]) == (expected, c * s + length)


def test_empty_data_is_an_error():
    with pytest.raises(EmptyDataError):
        tokenize(b"", 16)
