"""Fixtures shared by the unit tier."""
import pytest

SMALL_CODE = "def chunk(data, size):\n    return [data[i:i + size] for i in range(0, len(data), size)]\n" * 40


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """`small_corpus(parts)`: a directory of `parts` small Python files, each a different slice of
    the same code (what the in-process games mine and train on)."""
    def make(parts: int):
        root = tmp_path_factory.mktemp("corpus")
        for i in range(parts):
            (root / f"part{i}.py").write_text(f"# part {i}\n" + SMALL_CODE[i * 100:])
        return root
    return make
