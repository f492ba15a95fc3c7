"""`soma model`'s local parts, without a network: the key store it keeps in the wallet's files
(private, atomic, round trip, refusals), argument and file parsing, the default embedding (over
`soma_ray.corpus`), and the checks made before anything is sent."""
import json
import os
import stat

import numpy as np
import pytest
from typer.testing import CliRunner

from soma_ray import corpus
from soma_ray import wallet as keystore
from soma_ray.cli import model as cli
from soma_ray.cli.common import BadArgument
from soma_ray.model import V1Config, seeded_model, weights_bytes
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import show_address
from soma_ray.protocol.models import awaited_reveal, model_commitment, reveal_epoch
from soma_ray.protocol.types import Model, PendingUpdate, StakingPool, WeightsManifest
from soma_ray.wallet import Wallet

MODEL_ID, OWNER, POOL = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
KEY = b"\x04" * 32
EMBEDDING = np.linspace(-1, 1, 64, dtype=np.float32).tobytes()
SECRET = keystore.ModelSecret(MODEL_ID, KEY, EMBEDDING, "http://blobs/weights/0xab")
MANIFEST = WeightsManifest(url="http://blobs/weights/0xab", checksum=b"\x05" * 32, size=1234)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def committed(status="Pending", commit_epoch=3, key=KEY, embedding=EMBEDDING, **fields) -> Model:
    return Model(id=MODEL_ID, owner=OWNER, architecture_version=1, status=status, commission_bps=1000,
                 staking_pool_id=POOL, weights_manifest=MANIFEST, key_commitment=model_commitment(key),
                 embedding_commitment=model_commitment(embedding), commit_epoch=commit_epoch, **fields)


# ------------------------------------------------------------------ the key store

def test_a_saved_secret_reads_back_from_a_private_file_in_a_private_directory(tmp_path):
    path = keystore.save_secret(SECRET, tmp_path)
    assert path == tmp_path / "models" / f"{show_address(MODEL_ID)}.json"
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)
    assert keystore.load_secret(MODEL_ID, tmp_path) == SECRET


def test_saving_into_a_wider_models_directory_makes_it_private(tmp_path):
    (tmp_path / "models").mkdir(mode=0o755)
    os.chmod(tmp_path / "models", 0o755)
    keystore.save_secret(SECRET, tmp_path)
    assert mode(tmp_path / "models") == 0o700


def test_a_failed_save_leaves_the_previous_record_whole_and_no_scratch_file(tmp_path, monkeypatch):
    path = keystore.save_secret(SECRET, tmp_path)
    before = path.read_bytes()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        keystore.save_secret(keystore.ModelSecret(MODEL_ID, b"\x09" * 32, EMBEDDING, "http://other"), tmp_path)
    monkeypatch.undo()
    assert path.read_bytes() == before and keystore.load_secret(MODEL_ID, tmp_path) == SECRET
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_missing_record_names_its_path_and_the_model(tmp_path):
    with pytest.raises(keystore.KeyStoreError) as missing:
        keystore.load_secret(MODEL_ID, tmp_path)
    assert str(keystore.key_store_path(MODEL_ID, tmp_path)) in str(missing.value)
    assert show_address(MODEL_ID) in str(missing.value)


def test_a_record_others_can_read_is_refused_with_the_fix(tmp_path):
    path = keystore.save_secret(SECRET, tmp_path)
    path.chmod(0o644)
    with pytest.raises(keystore.KeyStoreError, match=f"mode 0644.*chmod 600 {path}"):
        keystore.load_secret(MODEL_ID, tmp_path)


def record(**changes) -> bytes:
    fields = {"version": 1, "model_id": show_address(MODEL_ID), "decryption_key": show_address(KEY),
              "embedding": show_address(EMBEDDING), "weights_url": "http://x"}
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not None}).encode()


@pytest.mark.parametrize("data, reason", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[" * 100_000, "not JSON"),
    (b"[1, 2]", "expected the fields"),
    (record(weights_url=None), "expected the fields"),
    (record(extra="x"), "expected the fields"),
    (record(version=2), "version 2"),
    (record(decryption_key=7), "not text"),
    (record(decryption_key="0xzz"), "decryption_key is not hex"),
    (record(decryption_key="0x" + "ab" * 31), "decryption_key is 32 bytes, got 31"),
    (record(embedding="0x" + "00" * 5), "not float32 values"),
    (record(embedding=show_address(np.array([1, np.nan], np.float32).tobytes())), "not finite"),
    (record(model_id=show_address(b"\x07" * 32)), "holds model 0x0707"),
])
def test_a_malformed_record_is_refused_with_the_reason(tmp_path, data, reason):
    path = keystore.save_secret(SECRET, tmp_path)
    path.write_bytes(data)
    with pytest.raises(keystore.KeyStoreError, match="not a usable key store record") as refused:
        keystore.load_secret(MODEL_ID, tmp_path)
    assert reason in str(refused.value)


def test_an_oversized_record_is_refused_unread(tmp_path):
    path = keystore.save_secret(SECRET, tmp_path)
    path.write_bytes(b" " * (keystore.MAX_KEY_STORE_BYTES + 1))
    with pytest.raises(keystore.KeyStoreError, match="over"):
        keystore.load_secret(MODEL_ID, tmp_path)


# ------------------------------------------------------------------ arguments and files

@pytest.mark.parametrize("text, bps", [("1000", 1000), ("10%", 1000), ("12.5%", 1250), ("0", 0),
                                       ("100%", 10_000), (" 7.25% ", 725)])
def test_commission_is_basis_points_or_a_percentage(text, bps):
    assert cli.parse_commission(text) == bps


@pytest.mark.parametrize("text", ["10.5", "101%", "10001", "-1", "abc", "", "0.001%", "nan", "inf%"])
def test_a_commission_that_is_no_whole_basis_points_in_range_is_refused(text):
    with pytest.raises(BadArgument, match="commission"):
        cli.parse_commission(text)


def test_commission_shows_as_a_percentage():
    assert [cli.show_commission(b) for b in (1000, 1250, 0, 10_000, 1)] == [
        "10%", "12.5%", "0%", "100%", "0.01%"]


def test_an_embedding_file_is_a_float32_npy_or_raw_little_endian_float32(tmp_path):
    vector = np.linspace(-1, 1, 64, dtype=np.float32)
    np.save(tmp_path / "e.npy", vector)
    (tmp_path / "e.bin").write_bytes(vector.astype("<f4").tobytes())
    assert cli.read_embedding_file(tmp_path / "e.npy") == EMBEDDING
    assert cli.read_embedding_file(tmp_path / "e.bin") == EMBEDDING


def test_a_bad_embedding_file_is_refused(tmp_path):
    np.save(tmp_path / "double.npy", np.ones(64))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    (tmp_path / "odd.bin").write_bytes(b"12345")
    with pytest.raises(errors.MalformedInput, match="float32, got float64"):
        cli.read_embedding_file(tmp_path / "double.npy")
    with pytest.raises(BadArgument, match="not a .npy array"):
        cli.read_embedding_file(tmp_path / "junk.npy")
    with pytest.raises(errors.MalformedInput, match="not float32 values"):
        cli.read_embedding_file(tmp_path / "odd.bin")
    with pytest.raises(BadArgument, match="No such file"):
        cli.read_embedding_file(tmp_path / "missing.npy")


@pytest.fixture(scope="module")
def small_weights() -> bytes:
    return weights_bytes(seeded_model(V1Config.small(), 11))


def test_weights_must_be_a_v1_file_as_wide_as_the_network(tmp_path, small_weights):
    (tmp_path / "w.safetensors").write_bytes(small_weights)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    assert cli.read_weights(tmp_path / "w.safetensors", 64, 10**9) == small_weights
    with pytest.raises(BadArgument, match="a model of width 64; the network's embedding_dim is 128"):
        cli.read_weights(tmp_path / "w.safetensors", 128, 10**9)
    with pytest.raises(BadArgument, match="junk.safetensors: weights file is not valid safetensors"):
        cli.read_weights(tmp_path / "junk.safetensors", 64, 10**9)
    with pytest.raises(BadArgument, match="No such file"):
        cli.read_weights(tmp_path / "missing.safetensors", 64, 10**9)
    with pytest.raises(BadArgument, match="over 1000 bytes"):
        cli.read_weights(tmp_path / "w.safetensors", 64, 1000)


def test_ids_and_amounts_are_refused_before_anything_is_sent(tmp_path):
    wallet = tmp_path / "wallet.json"
    Wallet.load(wallet).new_key("owner", set_default=True)
    env = {"SOMA_WALLET": str(wallet), "SOMA_RPC_URL": "http://127.0.0.1:9"}  # nothing listens
    runner = CliRunner()
    for args, message in [(["reveal", "0x12"], "model id '0x12': expected 0x followed by 64 hex digits"),
                          (["stake", show_address(MODEL_ID), "abc"], "amount 'abc' is not a number"),
                          (["create", "--commission", "200%"], "commission '200%'")]:
        result = runner.invoke(cli.app, args, env=env)
        assert result.exit_code == 1 and result.output.startswith(f"error: {message}"), result.output
        assert result.output.count("\n") == 1  # one line, no traceback


# ------------------------------------------------------------------ the default embedding

def test_corpus_files_are_a_file_or_a_directorys_files_in_order(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/2.txt", "a.txt", "b/1.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert corpus.corpus_files(tmp_path) == [tmp_path / "a.txt", tmp_path / "b/1.txt", tmp_path / "b/2.txt"]
    assert corpus.corpus_files(tmp_path / "a.txt") == [tmp_path / "a.txt"]
    assert corpus.corpus_files(None) and all(p.suffix == ".py" for p in corpus.corpus_files(None))
    with pytest.raises(corpus.CorpusNotFound, match="no such file or directory"):
        corpus.corpus_files(tmp_path / "missing")
    with pytest.raises(BadArgument, match="no such file or directory"):  # in the command's words
        cli.embedding_sample(tmp_path / "missing")


def test_windows_are_evenly_spaced_over_the_files_bytes_and_bounded(tmp_path):
    (tmp_path / "a").write_bytes(bytes(range(100)))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "b").write_bytes(bytes(range(100, 200)))
    files = [tmp_path / "a", tmp_path / "empty", tmp_path / "b"]
    assert corpus.sample_windows(files, count=4, size=10) == [
        bytes(range(0, 10)), bytes(range(50, 60)), bytes(range(100, 110)), bytes(range(150, 160))]
    assert corpus.sample_windows(files, count=2, size=80) == [bytes(range(0, 80)), bytes(range(100, 180))]
    assert corpus.sample_windows([tmp_path / "a"], count=3, size=40)[-1] == bytes(range(66, 100))
    with pytest.raises(corpus.EmptyCorpus, match="holds no bytes"):
        corpus.sample_windows([tmp_path / "empty"])
    with pytest.raises(BadArgument, match="holds no bytes"):  # in the command's words
        cli.embedding_sample(tmp_path / "empty")


def test_the_default_embedding_is_the_models_own_unit_mean_and_depends_on_the_model(small_weights):
    sample = [b"def f(x):\n    return x + 1\n", b"import os\nprint(os.getcwd())\n"]
    embedding = cli.model_embedding(small_weights, sample)
    vector = np.frombuffer(embedding, "<f4")
    assert vector.shape == (64,) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    assert cli.model_embedding(small_weights, sample) == embedding
    other = cli.model_embedding(weights_bytes(seeded_model(V1Config.small(), 12)), sample)
    assert other != embedding


# ------------------------------------------------------------------ checks before sending

def test_the_reveal_is_due_the_epoch_after_the_commit():
    assert reveal_epoch(awaited_reveal(committed(commit_epoch=3)).commit_epoch) == 4
    update = PendingUpdate(MANIFEST, weights_commitment=b"", embedding_commitment=model_commitment(EMBEDDING),
                           key_commitment=model_commitment(b"k" * 32), commit_epoch=7)
    due = awaited_reveal(committed(status="Active", pending_update=update))
    assert (reveal_epoch(due.commit_epoch), due.key_commitment) == (8, model_commitment(b"k" * 32))
    with pytest.raises(errors.InvalidModelStatus, match="model is Created"):
        awaited_reveal(committed(status="Created"))


def test_a_reveal_the_chain_would_refuse_is_refused_here_with_its_numbers():
    model = committed(commit_epoch=3)
    assert cli.check_reveal(model, OWNER, 4, SECRET) is None
    with pytest.raises(errors.ModelRevealEpochMismatch) as late:
        cli.check_reveal(model, OWNER, 5, SECRET)
    assert (late.value.commit_epoch, late.value.current_epoch) == (3, 5)
    assert "committed in 3, now 5" in str(late.value)
    with pytest.raises(errors.NotOwner):
        cli.check_reveal(model, b"\x09" * 32, 4, SECRET)
    with pytest.raises(keystore.KeyStoreError, match="not the ones it committed to"):
        cli.check_reveal(committed(key=b"\x08" * 32), OWNER, 4, SECRET)


def test_commit_and_deactivate_are_checked_against_the_models_status():
    cli.check_commit(committed(status="Created"), OWNER)
    cli.check_commit(committed(status="Active"), OWNER)
    update = PendingUpdate(MANIFEST, b"", b"", b"", 7)
    with pytest.raises(errors.InvalidModelStatus, match="Active with a pending update"):
        cli.check_commit(committed(status="Active", pending_update=update), OWNER)
    with pytest.raises(errors.InvalidModelStatus, match="model is Pending"):
        cli.check_commit(committed(), OWNER)  # its record is still needed for the reveal
    with pytest.raises(errors.NotOwner):
        cli.check_commit(committed(status="Created"), b"\x09" * 32)
    cli.check_deactivate(committed(status="Active"), OWNER)
    with pytest.raises(errors.InvalidModelStatus, match="needs Created or Active"):
        cli.check_deactivate(committed(), OWNER)


def test_a_stake_on_an_inactive_pool_or_beyond_the_balance_is_refused():
    pool = StakingPool(id=POOL, owner=MODEL_ID, soma_balance=10**9)
    cli.check_stake(pool, 10, available=1_010, fee=1_000)
    with pytest.raises(errors.InsufficientBalance) as poor:
        cli.check_stake(pool, 11, available=1_010, fee=1_000)
    assert (poor.value.required, poor.value.available) == (1_011, 1_010)
    with pytest.raises(errors.PoolInactive):
        cli.check_stake(StakingPool(id=POOL, owner=MODEL_ID, deactivation_epoch=2), 10, 10**9, 1_000)


def test_info_shows_the_model_in_words():
    update = PendingUpdate(WeightsManifest("http://new", b"\x06" * 32, 99), b"", b"", b"", 7)
    rows = dict(cli.model_rows(committed(status="Active", pending_update=update, decryption_key=KEY),
                               StakingPool(id=POOL, owner=MODEL_ID, soma_balance=2_500_000_000,
                                           pending_stake=10**9)))
    assert rows["status"] == "Active" and rows["owner"] == show_address(OWNER)
    assert (rows["stake"], rows["pending stake"]) == ("2.5 SOMA", "1 SOMA (active next epoch)")
    assert (rows["commission"], rows["weights"], rows["weights size"]) == (
        "10%", MANIFEST.url, "1234 bytes (encrypted)")
    assert rows["decryption key"] == show_address(KEY) and rows["embedding"] == "not revealed"
    assert rows["pending update"] == "http://new, committed in epoch 7, reveal due in epoch 8"
