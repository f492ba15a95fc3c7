import os

import numpy as np
import pytest

from soma_ray.training.corpus import (Document, chunk_table, epoch_order, read_corpus,
                                      sample_indices, scoring_bytes, split_corpus,
                                      stdlib_source_files)
from soma_ray.training.errors import CorpusReadError, CorpusTooSmallError, EmptyCorpusError


def _docs(n):
    return [Document(f"f{i}.py", bytes([i % 256]) * (i + 1)) for i in range(n)]


def test_directory_corpus_reads_every_file_named_relative_to_root(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_bytes(b"alpha")
    (tmp_path / "sub" / "b.bin").write_bytes(bytes(range(256)))
    docs = read_corpus(tmp_path)
    assert [(d.name, d.data) for d in docs] == [("a.txt", b"alpha"),
                                                ("sub/b.bin", bytes(range(256)))]


def test_iterable_corpus_mixes_bytes_and_paths(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"from file")
    docs = read_corpus([b"raw", f])
    assert [d.data for d in docs] == [b"raw", b"from file"]


def test_default_corpus_is_the_standard_library_source():
    files = stdlib_source_files()
    assert any(p.name == "os.py" for p in files)
    assert not any("site-packages" in p.parts for p in files)


def test_corpus_without_files_is_a_typed_error(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(EmptyCorpusError) as e:
        read_corpus(tmp_path)
    assert e.value.files_seen == 1
    with pytest.raises(EmptyCorpusError):
        read_corpus([])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_a_typed_error_naming_it(tmp_path):
    f = tmp_path / "secret"
    f.write_bytes(b"data")
    f.chmod(0)
    with pytest.raises(CorpusReadError) as e:
        read_corpus(tmp_path)
    assert e.value.path == str(f)


def test_a_directory_where_a_file_should_be_is_a_read_error(tmp_path):
    # Reading a directory fails like an unreadable file, even as root.
    with pytest.raises(CorpusReadError) as e:
        read_corpus([tmp_path])
    assert e.value.path == str(tmp_path)


def test_missing_path_is_a_read_error(tmp_path):
    with pytest.raises(CorpusReadError) as e:
        read_corpus(tmp_path / "nope")
    assert "no such file" in e.value.reason


def test_split_holds_out_whole_documents_disjoint_from_training():
    docs = _docs(200)
    split = split_corpus(docs, 0.1)
    train, held = {d.name for d in split.train}, {d.name for d in split.held_out}
    assert not train & held and train | held == {d.name for d in docs}
    assert 5 <= len(held) <= 40


def test_split_does_not_depend_on_listing_order():
    docs = _docs(50)
    assert ({d.name for d in split_corpus(docs).held_out}
            == {d.name for d in split_corpus(docs[::-1]).held_out})


def test_split_always_keeps_one_document_on_each_side():
    split = split_corpus(_docs(2), 0.0)
    assert len(split.train) == 1 and len(split.held_out) == 1
    split = split_corpus(_docs(3), 1.0)
    assert len(split.train) == 1


def test_single_document_holds_out_its_tail():
    split = split_corpus([Document("one", b"0123456789")], 0.3)
    assert split.train[0].data == b"0123456" and split.held_out[0].data == b"789"
    with pytest.raises(CorpusTooSmallError) as e:
        split_corpus([Document("one", b"x")])
    assert e.value.total_bytes == 1


def test_scoring_bytes_are_cut_to_the_limit():
    assert scoring_bytes((Document("a", b"abc"), Document("b", b"def")), 4) == b"abcd"


def test_chunk_table_cuts_documents_like_the_tokenizer():
    table = chunk_table((Document("a", b"x" * 5), Document("b", b"y" * 8)), 4)
    assert table.document.tolist() == [0, 0, 1, 1]
    assert table.chunk.tolist() == [0, 1, 0, 1]


def test_each_epoch_visits_every_chunk_once_in_a_seeded_order():
    first = sample_indices(7, 10, 0, 10)
    assert sorted(first.tolist()) == list(range(10))
    second = sample_indices(7, 10, 10, 10)
    assert sorted(second.tolist()) == list(range(10)) and not np.array_equal(first, second)
    assert not np.array_equal(first, sample_indices(8, 10, 0, 10))


def test_samples_asked_for_later_match_one_long_stream():
    """A resumed run asks for samples from the middle; it must get what an unbroken run got."""
    stream = sample_indices(3, 7, 0, 30)
    assert np.array_equal(sample_indices(3, 7, 12, 11), stream[12:23])
    assert np.array_equal(stream[7:14], epoch_order(3, 1, 7))
