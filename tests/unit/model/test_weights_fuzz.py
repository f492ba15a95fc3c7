"""Hostile weights files fail closed: whatever the bytes, `load_weights` and `read_weights_header`
raise a `ModelError` subclass (the scoring service's typed 422 naming the model) and nothing
else — no RecursionError, ValueError, KeyError, TypeError, OverflowError, MemoryError.

Hypothesis drives random whole files, random header bytes, random JSON values (deep nesting,
wrong types), random tensor names (unicode digits...), and random lies in a valid header's
dtypes, shapes, offsets, metadata and data length. Any other exception fails the test. The
tiny config keeps each load fast; a second pass loads with no config (sizes from the file).
"""
import json
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from soma_ray.model import (
    ModelError,
    TensorShapeError,
    UnexpectedTensorError,
    V1Config,
    V1Model,
    WeightsFormatError,
    load_weights,
    read_weights_header,
    weights_bytes,
)

TINY = V1Config(embedding_dim=16, num_layers=2, num_heads=4, pwff_hidden_dim=32, max_seq_len=16)
FUZZ = settings(max_examples=800, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

GOOD = weights_bytes(V1Model(TINY))
(_LENGTH,) = struct.unpack("<Q", GOOD[:8])
GOOD_HEADER = json.loads(GOOD[8:8 + _LENGTH])
GOOD_BODY = GOOD[8 + _LENGTH:]
NAMES = sorted(k for k in GOOD_HEADER if k != "__metadata__")


def file_of(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + body


def fails_closed(data: bytes) -> None:
    """Each entry point, with the tiny config and with none: a model or a ModelError."""
    for config in (TINY, None):
        for load in (load_weights, read_weights_header):
            try:
                load(data, config)
            except ModelError:
                pass


# --- the two cases the issue names, and their relatives -----------------------------------------

@pytest.mark.parametrize("header", [
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b'{"embedding.weight":' + b"[" * 100_000,  # unterminated
    b'{"\\"[[[[":' + b"[" * 5000,  # brackets hidden in a string do not hide the real ones
])
def test_deep_nesting_is_a_format_error(header):
    for config in (TINY, None):
        with pytest.raises(WeightsFormatError, match="nests deeper"):
            load_weights(file_of(header), config)


@pytest.mark.parametrize("name", ["blocks.\u0663.x", "encoder.layers.\u0663.norm_1.gamma",
                                  "encoder.layers.\u00b2.norm_1.gamma", "encoder.layers.\uff11.x",
                                  "embedding.weight\x00", "a..b", "\ud800"])
def test_a_name_that_is_not_plain_ascii_is_a_format_error(name):
    header = dict(GOOD_HEADER, **{name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    for config in (TINY, None):
        with pytest.raises(WeightsFormatError, match="not a plain ASCII dotted name") as refused:
            load_weights(file_of(json.dumps(header).encode(), GOOD_BODY), config)
        assert refused.value.reason.isascii()


@pytest.mark.parametrize("name", ["encoder.layers.1_0.norm_1.gamma", "encoder.layers.01.norm_1.gamma",
                                  "encoder.layers.0.norm_3.gamma"])
def test_an_ascii_layer_name_that_is_not_the_models_is_unexpected(name):
    header = dict(GOOD_HEADER, **{name: {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}})
    with pytest.raises(UnexpectedTensorError) as refused:
        load_weights(file_of(json.dumps(header).encode(), GOOD_BODY), TINY)
    assert refused.value.keys == [name]


def test_a_huge_layer_number_is_refused_before_any_model_is_built():
    header = dict(GOOD_HEADER)
    header["encoder.layers.999999.norm_1.gamma"] = {"dtype": "F32", "shape": [0],
                                                    "data_offsets": [0, 0]}
    data = file_of(json.dumps(header).encode(), GOOD_BODY)
    with pytest.raises(ModelError, match="num_layers"):
        load_weights(data, TINY)
    with pytest.raises(ModelError, match="encoder.layers.2.norm_1.gamma"):  # the first missing
        load_weights(data)


def test_many_unknown_names_are_listed_briefly():
    header = dict(GOOD_HEADER, **{f"extra.t{i:04d}": {"dtype": "F32", "shape": [0],
                                                      "data_offsets": [0, 0]} for i in range(1000)})
    with pytest.raises(UnexpectedTensorError) as refused:
        load_weights(file_of(json.dumps(header).encode(), GOOD_BODY), TINY)
    assert refused.value.keys == [f"extra.t{i:04d}" for i in range(8)]


@pytest.mark.parametrize("header", [
    b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1, "a": 2}', b'{"a": ' + b"9" * 5000 + b"}",
    '{"a":1}'.encode("utf-16"), b'{"a": "\xff"}', b"", b"   ", b"null", b"[]", b'"x"',
])
def test_json_the_parser_would_bend_is_a_format_error(header):
    with pytest.raises(WeightsFormatError):
        load_weights(file_of(header), TINY)


def test_a_declared_header_length_is_never_allocated():
    for length in (2**64 - 1, 2**40, 4 * 2**20 + 1):
        with pytest.raises(WeightsFormatError, match="header claims"):
            load_weights(struct.pack("<Q", length) + b"{}", TINY)


def test_overlapping_spans_are_a_format_error():
    header = json.loads(json.dumps(GOOD_HEADER))
    first, second = NAMES[0], NAMES[1]
    header[second]["data_offsets"] = header[first]["data_offsets"]
    with pytest.raises(WeightsFormatError, match="overlap"):
        load_weights(file_of(json.dumps(header).encode(), GOOD_BODY), TINY)


@pytest.mark.parametrize("value", ["\u0664", "4 ", "+4", "1_0", "0", "nan", "inf", "-1e3",
                                   "1" * 40, "\ud800"])
def test_metadata_numbers_are_ascii_digits(value):
    header = json.loads(json.dumps(GOOD_HEADER))
    for field in ("num_heads", "max_wavelength"):
        header["__metadata__"] = dict(GOOD_HEADER["__metadata__"], **{f"soma.v1.{field}": value})
        with pytest.raises(ModelError):
            load_weights(file_of(json.dumps(header).encode(), GOOD_BODY))


def test_the_unchanged_file_still_loads():
    assert load_weights(GOOD, TINY).config == TINY
    assert read_weights_header(GOOD) == TINY


# --- fuzzing ------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=2048))
@example(b"")
@example(b"\xff" * 8)
def test_fuzz_random_files(data):
    fails_closed(data)


@FUZZ
@given(st.binary(max_size=512), st.one_of(st.none(), st.integers(0, 2**64 - 1)), st.binary(max_size=64))
def test_fuzz_random_header_bytes(header, declared, body):
    length = len(header) if declared is None else declared
    fails_closed(struct.pack("<Q", length) + header + body)


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False), st.text(max_size=12))


def json_values(max_leaves: int = 20):
    return st.recursive(JSON_SCALARS, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=max_leaves)


@st.composite
def nested_json(draw) -> bytes:
    depth = draw(st.integers(1, 20_000))
    opener = draw(st.sampled_from([b"[", b'{"k":', b'{"embedding.weight":']))
    closer = b"]" if opener == b"[" else b"}"
    return opener * depth + draw(st.sampled_from([b"1", b'"x"', b"[]", b""])) + closer * depth


@FUZZ
@given(st.one_of(json_values().map(lambda v: json.dumps(v).encode()), nested_json()),
       st.binary(max_size=64))
def test_fuzz_random_json_values(header, body):
    fails_closed(file_of(header, body))


# A tensor name: one of the real names, a layer name with a bent number (unicode digits such as
# "\u0663", "\u00b2", "\uff11", underscores, signs), random text, or real parts joined anyhow.
NUMBERS = st.one_of(st.sampled_from(["0", "1", "2", "999999", "\u0663", "\u00b2", "\uff11", "1_0",
                                     "01", " 1", "-1", "+1", "1" * 5000]),
                    st.characters(categories=["Nd", "No", "Nl"]), st.text(max_size=3))
NAME_PARTS = st.one_of(NUMBERS, st.sampled_from(["encoder", "layers", "norm_1", "gamma", "weight",
                                                 "", " ", "\x00"]))
NAMES_ST = st.one_of(st.sampled_from(NAMES),
                     st.builds("encoder.layers.{}.{}".format, NUMBERS,
                               st.sampled_from(["norm_1.gamma", "pwff.linear_inner.weight", "x"])),
                     st.text(max_size=40),
                     st.lists(NAME_PARTS, min_size=1, max_size=6).map(".".join))
COUNTS = st.one_of(st.integers(0, 300), st.integers(-2**64, 2**70), st.floats(allow_nan=False),
                   st.booleans(), st.text(max_size=4), st.none())
DTYPES = st.one_of(st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "f32", ""]),
                   st.text(max_size=20), st.integers(), st.none())
SHAPES = st.one_of(st.lists(st.integers(0, 300), max_size=3), st.lists(COUNTS, max_size=4),
                   json_values(4))
OFFSETS = st.one_of(st.lists(COUNTS, max_size=3),
                    st.tuples(st.integers(0, len(GOOD_BODY) + 8),
                              st.integers(0, len(GOOD_BODY) + 8)).map(list),
                    json_values(4))


@st.composite
def lying_headers(draw) -> bytes:
    """A valid tiny header with lies told about some of its entries, names and metadata, and
    the data possibly truncated or extended."""
    header = json.loads(json.dumps(GOOD_HEADER))
    for _ in range(draw(st.integers(1, 3))):
        change = draw(st.sampled_from(["dtype", "shape", "data_offsets", "entry", "drop", "add",
                                       "add", "rename", "rename", "metadata", "field"]))
        name = draw(st.sampled_from(NAMES))
        if not isinstance(header.get(name), dict):  # dropped or replaced by an earlier lie
            continue
        if change in ("dtype", "shape", "data_offsets"):
            header[name][change] = draw({"dtype": DTYPES, "shape": SHAPES,
                                         "data_offsets": OFFSETS}[change])
        elif change == "entry":
            header[name] = draw(json_values(6))
        elif change == "drop":
            del header[name]
        elif change == "add":  # an entry that is well formed (empty, at offset 0) or not
            header[draw(NAMES_ST)] = draw(st.one_of(
                st.just({"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}),
                st.fixed_dictionaries({"dtype": DTYPES, "shape": SHAPES, "data_offsets": OFFSETS})))
        elif change == "rename":
            header[draw(NAMES_ST)] = header.pop(name)
        elif change == "metadata":
            header["__metadata__"] = draw(st.one_of(
                json_values(6),
                st.dictionaries(st.sampled_from(["soma.v1.num_heads", "soma.v1.max_seq_len",
                                                 "soma.v1.max_wavelength", "other"]),
                                st.one_of(st.text(max_size=8),
                                          st.integers(-5, 2**40).map(str),
                                          st.floats().map(str)), max_size=3)))
        else:
            header[name][draw(st.text(max_size=6))] = draw(JSON_SCALARS)
    body = GOOD_BODY
    cut = draw(st.one_of(st.just(0), st.integers(-8, 8)))  # mostly the data as it was
    body = body[:cut] if cut < 0 else body + bytes(cut)
    return file_of(json.dumps(header).encode(), body)


@FUZZ
@given(lying_headers())
def test_fuzz_lies_in_a_valid_header(data):
    fails_closed(data)


@FUZZ
@given(st.integers(0, len(GOOD) - 1), st.integers(0, 255), st.integers(0, 8))
def test_fuzz_flipped_and_cut_bytes_of_a_valid_file(position, value, cut):
    data = bytearray(GOOD)
    data[position] = value
    fails_closed(bytes(data[:len(data) - cut]))


def test_a_shape_lie_names_the_tensor():
    header = json.loads(json.dumps(GOOD_HEADER))
    header["predictor.bias"]["shape"] = [263]
    with pytest.raises(TensorShapeError) as refused:
        load_weights(file_of(json.dumps(header).encode(), GOOD_BODY), TINY)
    assert refused.value.key == "predictor.bias"
