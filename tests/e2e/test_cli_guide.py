"""The guide's mining flow through the real `soma` command, on one localnet with its services
(real genesis weights, the real scoring service): a miner lists targets, scores a file against
one, submits it, sees it filled; two epochs later a claimer claims it and the miner, the model's
pool and the claimer get exactly the protocol's split. Bad input is one `error:` line, exit code
1, and costs nothing; staking through the CLI adds, lists and withdraws.

The data is real: the test scores a few candidate files through the scoring service and uses one
whose chain distance is within some open targets' threshold (and over another's), as a miner
would. The flow runs `soma` as a subprocess; the bad-input and staking checks invoke the same app
in this process (seconds of import time saved per command)."""
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from localnet_helpers import eventually
from soma_ray.cli.common import show_amount
from soma_ray.cli.main import app
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.state import MODEL, STAKING_POOL, SUBMISSION
from soma_ray.protocol.submissions import claim_split, required_bond
from soma_ray.protocol.targets import cosine_distance_fixed
from soma_ray.protocol.types import Model, StakingPool, Submission
from localnet_helpers import with_client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
SOMA = 10**9
SOMA_COMMAND = str(Path(sys.executable).with_name("soma"))
ID = re.compile(r"0x[0-9a-f]{64}")
# Candidate data: a miner's finds; their embeddings do not depend on the target.
CANDIDATES = [(b"a miner's find, number %d: " % i) * 40 for i in range(4)] + [
    bytes((i * 37 + j * j) % 256 for j in range(700)) for i in range(4)]


@pytest.fixture(scope="module")
def gateway(weights_network):
    """One validator with the gateway, blob store, scoring service and target index, and real
    genesis weights (shared with test_services: tests/e2e/conftest.py); its URL."""
    return weights_network.config.public_url


@pytest.fixture(scope="module")
def wallet(tmp_path_factory):
    return tmp_path_factory.mktemp("guide-wallet") / "wallet.json"


@pytest.fixture(scope="module")
def soma(gateway, wallet):
    """The real `soma` command, as a user's shell runs it (its own SOMA_HOME, wallet, gateway)."""
    env = {**os.environ, "SOMA_RPC_URL": gateway, "SOMA_WALLET": str(wallet),
           "SOMA_HOME": str(wallet.parent / "home")}

    def command(*args):
        return subprocess.run([SOMA_COMMAND, *args], capture_output=True, text=True, env=env, timeout=300)

    def together(*commands):
        """Commands that touch nothing the others do, run at once (their outputs, in order)."""
        running = [subprocess.Popen([SOMA_COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env) for args in commands]
        outputs = [p.communicate(timeout=300) for p in running]
        return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(running, outputs)]

    command.together = together
    return command


@pytest.fixture(scope="module")
def soma_here(gateway, wallet):
    """The same app in this process (CliRunner): for the checks that need no real shell."""
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), env={"SOMA_RPC_URL": gateway, "SOMA_WALLET": str(wallet)})


@pytest.fixture(scope="module")
def scored_candidates(gateway):
    """(data, winning model id, loss, embedding) of each candidate under the genesis models
    (every genesis target has all of them), through the scoring service."""
    async def scenario(client):
        target = (await client.get_targets("open"))[0]
        manifests = await client.get_model_manifests(target)
        found = await asyncio.gather(*(client.score(None, manifests, target.embedding, data=d) for d in CANDIDATES))
        return [(d, manifests[r.winner].model_id, r.loss_score, r.embedding) for d, r in zip(CANDIDATES, found)]
    return with_client(gateway, scenario)


def hits_and_misses(gateway, scored_candidates, hits_needed):
    """A candidate with at least `hits_needed` open targets within its chain distance and one
    beyond: (data, model id, loss, [(hit target, distance)...], (missed target, distance))."""
    targets = with_client(gateway, lambda client: client.get_targets("open"))
    for data, model_id, loss, embedding in scored_candidates:
        distances = [(t, cosine_distance_fixed(embedding, t.embedding)) for t in targets]
        hits = [(t, d) for t, d in distances if d <= t.threshold_fixed]
        misses = [(t, d) for t, d in distances if d > t.threshold_fixed]
        if len(hits) >= hits_needed and misses:
            return data, model_id, loss, hits, misses[0]
    raise AssertionError("no candidate hits and misses the open targets")


def new_key(soma, name):
    made = soma("wallet", "new", "--name", name)
    assert made.returncode == 0, made.stderr
    return bytes.fromhex(ID.search(made.stdout).group()[2:])


def ok(result):
    """stdout of a command that must succeed (its stderr shown if it did not)."""
    code = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    assert code == 0, result.stdout + result.stderr
    return result.stdout


def refused(result, *words):
    """A command that failed with one `error:` line containing `words`."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(w in errors[0] for w in words), result.output
    return errors[0]


async def pool_value(client, model_id):
    model = await client.get_object(MODEL, model_id, Model)
    pool = await client.get_object(STAKING_POOL, model.staking_pool_id, StakingPool)
    return pool.soma_balance + pool.pending_stake


def test_bad_input_is_one_error_line_and_costs_nothing(gateway, soma_here, scored_candidates, tmp_path):
    data, model_id, loss, hits, (missed, far) = hits_and_misses(gateway, scored_candidates, 3)
    file = tmp_path / "find.bin"
    file.write_bytes(data)
    (tmp_path / "huge.bin").write_bytes(b"\0" * (1024 * 1024 + 1))
    careful, poor, first = (preset_keypair(f"guide-{n}", 0) for n in ("careful", "poor", "first"))
    for name, key in (("careful", careful), ("poor", poor)):
        ok(soma_here("wallet", "import", name, key.to_text()))
    (filled, distance), (other, _) = hits[1], hits[2]
    embedding = next(e for d, _, _, e in scored_candidates if d == data)

    async def prepare(client):
        for key, amount in ((careful, 10 * SOMA), (poor, 50_000), (first, 10 * SOMA)):
            await client.request_faucet(key.address, amount)  # poor: less than the bond and fees
        url = await client.upload(data, signer=first)
        await client.submit_data(first, filled.id, data, url, model_id, embedding, distance / 1e9, loss)
        await eventually(lambda: status_is(client, filled.id, "filled"))
        return await accounts(client, careful, poor)

    before = with_client(gateway, prepare)
    params = with_client(gateway, lambda client: client.get_system_state()).parameters
    bond_and_fees = required_bond(params, len(data)) + 2 * params.base_fee  # the commit's and the reveal's
    unknown = "0x" + "ab" * 32
    refused(soma_here("submit", str(file), "--target", unknown, "--key", "careful"), "no target", unknown)
    refused(soma_here("submit", str(file), "--target", show(filled.id), "--key", "careful"),
            "the target is filled, not Open")
    refused(soma_here("submit", str(file), "--target", show(missed.id), "--key", "careful"),
            "not a hit", f"{far} > {missed.threshold_fixed}")
    refused(soma_here("submit", str(file), "--target", show(other.id), "--key", "poor"),
            f"needs {show_amount(bond_and_fees)}", "the account has 0.00005 SOMA")
    refused(soma_here("target", "claim", show(filled.id), "--key", "careful"),
            "rewards can be claimed from epoch 2 (now 0)")
    refused(soma_here("submit", str(file), "--target", "0x1234", "--key", "careful"),
            "expected 0x followed by 64 hex digits")
    refused(soma_here("submit", str(tmp_path / "missing.bin"), "--key", "careful"), "does not exist")
    refused(soma_here("submit", str(tmp_path / "huge.bin"), "--key", "careful"),
            "is 1048577 bytes", "at most 1048576 bytes")
    refused(soma_here("data", "download", unknown), "no target", unknown)
    info = ok(soma_here("target", "info", show(filled.id)))
    assert "status           filled" in info and f"miner            {show(first.address)}" in info
    assert with_client(gateway, lambda client: accounts(client, careful, poor)) == before  # nothing sent


def show(ident: bytes) -> str:
    return "0x" + ident.hex()


async def accounts(client, *keys):
    return [await client.get_account(k.address) for k in keys]


async def status_is(client, target_id, status):
    return (await client.get_target(target_id)).status == status


def test_the_guides_mining_flow_through_the_soma_command_pays_the_protocols_split(
        gateway, soma, scored_candidates, tmp_path):
    miner, claimer = new_key(soma, "miner"), new_key(soma, "claimer")
    for funded in soma.together(("faucet", "100", "--key", "miner"), ("faucet", "100", "--key", "claimer")):
        ok(funded)
    data, model_id, loss, hits, _ = hits_and_misses(gateway, scored_candidates, 2)
    target, distance = min(hits, key=lambda hit: (-hit[0].reward_pool, hit[1]))  # the richest, nearest
    other, other_distance = next(hit for hit in hits if hit[0] != target)
    file = tmp_path / "find.bin"
    file.write_bytes(data)

    listed, best, scored = map(ok, soma.together(
        ("target", "list"), ("score", str(file)), ("score", str(file), "--target", show(target.id))))
    assert show(target.id) in listed and "open" in listed
    assert ID.search(best).group() == show(target.id) and f"winner model {show(model_id)}" in best  # first row
    assert f"model {show(model_id)}, loss {loss:.6f}" in scored
    assert f"distance   {distance / 1e9:.6f} vs threshold {target.threshold_fixed / 1e9:.6f}: hit" in scored
    submitted = ok(soma("submit", str(file), "--key", "miner"))  # to the best target
    assert f"to target {show(target.id)} (filled)" in submitted
    submission_id = bytes.fromhex(ID.search(submitted).group()[2:])
    mine, _ = map(ok, soma.together(("target", "list", "--mine", "--key", "miner"),
                                    ("data", "download", show(target.id), "--out", str(tmp_path / "back.bin"))))
    assert show(target.id) in mine and "filled" in mine
    assert (tmp_path / "back.bin").read_bytes() == data
    with_client(gateway, lambda client: fill_by_sdk(client, other, data, model_id, loss, other_distance,
                                                    next(e for d, _, _, e in scored_candidates if d == data)))
    ok(soma("epoch", "advance"))
    ok(soma("epoch", "advance"))

    async def before_claim(client):
        await eventually(lambda: status_is(client, target.id, "claimable"))
        submission = await client.get_object(SUBMISSION, submission_id, Submission)
        view = await client.get_target(target.id)
        params = (await client.get_system_state()).parameters
        return params, view.reward_pool, submission, await balances(client)

    async def balances(client):
        return (await client.get_balance(miner), await client.get_balance(claimer),
                await pool_value(client, model_id))

    params, reward, submission, before = with_client(gateway, before_claim)
    assert (submission.miner, submission.revealed.model_id) == (miner, model_id)
    claimed = ok(soma("target", "claim", show(target.id), "--key", "claimer"))
    assert "paid" in claimed
    after = with_client(gateway, balances)
    fee, miner_share, model_share = claim_split(params, reward)
    assert after[0] - before[0] == miner_share + submission.bond  # the miner's share, its bond back
    assert after[1] - before[1] == fee - params.base_fee  # the finder's fee, less its own fee
    assert after[2] - before[2] == model_share  # the model's pool, commission included
    assert f"paid: finder's fee {show_amount(fee)} to you, {show_amount(miner_share)} to the miner" in claimed
    every = ok(soma("target", "claim", "--all", "--key", "claimer")).splitlines()
    assert any(line.startswith(f"{show(other.id)}: paid: ") for line in every)
    assert all(": paid: " in line for line in every)  # the bad-input test's fill too, if it ran
    assert with_client(gateway, lambda client: client.get_targets("claimable")) == []


async def fill_by_sdk(client, target, data, model_id, loss, distance, embedding):
    """Another miner fills `target` (through the SDK)."""
    other = preset_keypair("guide-other-miner", 0)
    await client.request_faucet(other.address, 10 * SOMA)
    url = await client.upload(data, signer=other)
    await client.submit_data(other, target.id, data, url, model_id, embedding, distance / 1e9, loss)


def test_staking_adds_lists_and_withdraws_through_the_cli(gateway, soma_here):
    staker = preset_keypair("guide-staker", 0)
    ok(soma_here("wallet", "import", "staker", staker.to_text()))
    [validator] = with_client(gateway, lambda client: client.get_validators())
    with_client(gateway, lambda client: client.request_faucet(staker.address, 10 * SOMA))
    listed = ok(soma_here("validator", "list"))
    assert show(validator.address) in listed and "100.00%" in listed
    added = ok(soma_here("stake", "add", show(validator.address), "2.5", "--key", "staker"))
    staked_id = ID.search(added).group()
    stakes = ok(soma_here("stake", "list", "--key", "staker"))
    assert staked_id in stakes and "2.5 SOMA" in stakes
    withdrawn = ok(soma_here("stake", "withdraw", staked_id, "--key", "staker"))
    assert "2.5 SOMA refunded now" in withdrawn  # not active before the next epoch
    assert staked_id not in ok(soma_here("stake", "list", "--key", "staker"))
    fees = 2 * with_client(gateway, lambda client: client.get_system_state()).parameters.base_fee
    assert with_client(gateway, lambda client: client.get_balance(staker.address)) == 10 * SOMA - fees
