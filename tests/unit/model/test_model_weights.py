import json
import struct

import pytest
import torch
from safetensors.torch import save_file
from soma_models.v1.torch import Model as ReferenceModel
from soma_models.v1.torch import ModelConfig as ReferenceConfig

from soma_ray.model import (
    ConfigMismatchError,
    MissingTensorError,
    TensorDtypeError,
    TensorShapeError,
    UnexpectedTensorError,
    V1Config,
    V1Model,
    WeightsFormatError,
    load_weights,
    read_weights_header,
    save_weights,
)

CONFIG = V1Config(embedding_dim=16, num_layers=2, num_heads=4, pwff_hidden_dim=32,
                  max_seq_len=16)


def reference_of(config: V1Config) -> ReferenceModel:
    return ReferenceModel(ReferenceConfig(
        dropout_rate=0.0, embedding_dim=config.embedding_dim, pwff_hidden_dim=config.pwff_hidden_dim,
        num_layers=config.num_layers, num_heads=config.num_heads, vocab_size=config.vocab_size,
        max_wavelength=config.max_wavelength)).eval()


def inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 258, (2, 16), generator=g), torch.arange(32).view(2, 16)


def test_our_file_loads_strictly_into_the_reference_with_the_same_outputs(tmp_path):
    ours = V1Model(CONFIG).eval()
    save_weights(ours, tmp_path / "w.safetensors")
    theirs = ReferenceModel.load(tmp_path / "w.safetensors", reference_of(CONFIG).config).eval()
    tokens, positions = inputs()
    with torch.no_grad():
        torch.testing.assert_close(theirs(tokens, positions), ours(tokens, positions),
                                   atol=1e-5, rtol=1e-5)


def test_reference_file_loads_into_ours_and_sizes_are_inferred(tmp_path):
    theirs = reference_of(CONFIG)
    theirs.save(tmp_path / "ref.safetensors")
    # The reference stores no head count: pass it, and let the file fix the rest.
    ours = load_weights(tmp_path / "ref.safetensors", CONFIG)
    assert ours.config == CONFIG and not ours.training
    tokens, positions = inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens, positions), theirs(tokens, positions),
                                   atol=1e-5, rtol=1e-5)
    inferred = load_weights((tmp_path / "ref.safetensors").read_bytes())
    assert (inferred.config.embedding_dim, inferred.config.num_layers,
            inferred.config.pwff_hidden_dim, inferred.config.vocab_size) == (16, 2, 32, 264)


def test_round_trip_keeps_every_number_and_the_config(tmp_path):
    model = V1Model(CONFIG)
    save_weights(model, tmp_path / "w.safetensors")
    for source in (tmp_path / "w.safetensors", (tmp_path / "w.safetensors").read_bytes()):
        loaded = load_weights(source)
        assert loaded.config == CONFIG
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key


def test_config_that_disagrees_with_the_file_names_the_field(tmp_path):
    save_weights(V1Model(CONFIG), tmp_path / "w.safetensors")
    with pytest.raises(ConfigMismatchError) as err:
        load_weights(tmp_path / "w.safetensors",
                     V1Config(embedding_dim=16, num_layers=3, num_heads=4, pwff_hidden_dim=32,
                              max_seq_len=16))
    assert (err.value.field, err.value.config_value, err.value.file_value) == ("num_layers", 3, 2)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_missing_tensor_is_named(tmp_path):
    state = _state(V1Model(CONFIG))
    del state["encoder.layers.1.attention.key.bias"]
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(MissingTensorError) as err:
        load_weights(tmp_path / "w.safetensors", CONFIG)
    assert err.value.key == "encoder.layers.1.attention.key.bias"


def test_misshaped_tensor_is_named(tmp_path):
    state = _state(V1Model(CONFIG))
    state["encoder.layers.0.norm_2.gamma"] = torch.ones(17)
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(TensorShapeError) as err:
        load_weights(tmp_path / "w.safetensors", CONFIG)
    assert (err.value.key, err.value.expected, err.value.got) == (
        "encoder.layers.0.norm_2.gamma", (16,), (17,))


def test_wrong_dtype_is_named(tmp_path):
    state = _state(V1Model(CONFIG))
    state["predictor.bias"] = state["predictor.bias"].to(torch.float16)
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(TensorDtypeError) as err:
        load_weights(tmp_path / "w.safetensors", CONFIG)
    assert (err.value.key, err.value.got) == ("predictor.bias", "F16")


def test_unknown_extra_tensor_is_an_error(tmp_path):
    state = _state(V1Model(CONFIG))
    state["encoder.extra"] = torch.zeros(2)
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(UnexpectedTensorError) as err:
        load_weights(tmp_path / "w.safetensors", CONFIG)
    assert err.value.keys == ["encoder.extra"]


@pytest.mark.parametrize("cut", [0, 5, 100, 1])
def test_truncated_file_is_a_format_error(tmp_path, cut):
    save_weights(V1Model(CONFIG), tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    truncated = data[:cut] if cut < 8 + 1 else data[:-cut]
    with pytest.raises(WeightsFormatError):
        load_weights(truncated)


def test_corrupt_header_is_a_format_error():
    body = b"{not json"
    with pytest.raises(WeightsFormatError, match="JSON"):
        load_weights(struct.pack("<Q", len(body)) + body)
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    with pytest.raises(WeightsFormatError, match="truncated"):
        load_weights(struct.pack("<Q", len(header)) + header)


def test_save_replaces_the_file_whole(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"old")
    save_weights(V1Model(CONFIG), path)
    assert load_weights(path).config == CONFIG
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_loaded_model_owns_its_memory(tmp_path):
    # Overwriting the file in place afterwards must not change a loaded model (no mmap).
    path = tmp_path / "w.safetensors"
    save_weights(V1Model(CONFIG), path)
    loaded = load_weights(path)
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    with open(path, "r+b") as f:
        f.seek(-64, 2)
        f.write(bytes(64))
    reloaded = load_weights(path).state_dict()
    assert any(not torch.equal(reloaded[k], before[k]) for k in before)  # the write hit a tensor
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_tensor_span_that_disagrees_with_its_shape_is_a_format_error(tmp_path):
    header, body = _saved_header(tmp_path)
    header["predictor.bias"]["shape"] = [263]  # claims fewer values than its 264·4 bytes
    with pytest.raises(TensorShapeError):
        load_weights(_with_header(header, body))
    header["predictor.bias"]["shape"] = [264]
    begin, end = header["final_norm.beta"]["data_offsets"]
    header["final_norm.beta"]["data_offsets"] = [begin, end - 4]
    for check in (load_weights, read_weights_header):
        with pytest.raises(WeightsFormatError, match="final_norm.beta"):
            check(_with_header(header, body))


def test_header_alone_gives_the_config_and_the_same_errors_without_reading_tensors(tmp_path):
    header, body = _saved_header(tmp_path)
    assert read_weights_header(tmp_path / "w.safetensors") == CONFIG
    # The answer depends on the header only, whatever the tensor bytes hold.
    blank = _with_header(header, bytes(len(body)))
    assert read_weights_header(blank, CONFIG) == CONFIG
    with pytest.raises(ConfigMismatchError, match="num_layers"):
        read_weights_header(blank, V1Config(embedding_dim=16, num_layers=3, num_heads=4,
                                            pwff_hidden_dim=32, max_seq_len=16))
    with pytest.raises(WeightsFormatError):
        read_weights_header(_with_header(header, body[:-1]))


def _saved_header(tmp_path) -> tuple[dict, bytes]:
    """Save a `CONFIG` model to `tmp_path / "w.safetensors"`: its JSON header, parsed, and the
    tensor bytes after it."""
    save_weights(V1Model(CONFIG), tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def _with_header(header: dict, body: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + body


@pytest.mark.parametrize("heads,match", [("four", "num_heads"), ("3", "not a V1 model")])
def test_bad_size_metadata_is_a_format_error(tmp_path, heads, match):
    state = _state(V1Model(CONFIG))
    save_file(state, tmp_path / "w.safetensors", metadata={"soma.v1.num_heads": heads})
    with pytest.raises(WeightsFormatError, match=match):
        load_weights(tmp_path / "w.safetensors")


@pytest.mark.parametrize("change", ["float offsets", "bool shape", "metadata not a map"])
def test_header_values_of_the_wrong_json_type_are_format_errors(tmp_path, change):
    header, body = _saved_header(tmp_path)
    if change == "float offsets":
        offsets = header["final_norm.beta"]["data_offsets"]
        header["final_norm.beta"]["data_offsets"] = [float(n) for n in offsets]
    elif change == "bool shape":
        header["predictor.bias"]["shape"] = [True]
    else:
        header["__metadata__"] = 5
    for check in (load_weights, read_weights_header):
        with pytest.raises(WeightsFormatError):
            check(_with_header(header, body))
