"""Audits on a real localnet with its services and real genesis weights: people challenge
submissions through the SDK (or `soma challenge`), every validator's audit worker re-scores them
through the scoring service and votes, the aggregator resolves. Fraud is slashed, an honest miner
keeps its fill and gets the challenger's bond; a validator, a worker and the aggregator dying
mid-audit, a second aggregator, and a Byzantine voter change nothing but the evidence."""
import numpy as np
import pytest
import ray
import typer
from typer.testing import CliRunner

from actors.audit import SAMPLING_SWITCH
from actors.network import launch_aggregator, launch_audit_worker
from localnet_helpers import eventually, funded, start_served, with_client
from soma_ray.cli import challenge
from soma_ray.node.audit import sign_vote
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import encode
from soma_ray.protocol.state import SUBMISSION, TARGET
from soma_ray.protocol.targets import cosine_distance_fixed
from soma_ray.protocol.types import Submission, Target
from soma_ray.wallet import Wallet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
SOMA = 10**9
RESOLVE_S = 240.0  # generous: audits score on 2 loaded cores


@pytest.fixture(scope="module")
def audited(ray_session, serve_url, tmp_path_factory):
    # The challenge path alone: the workers' sampling audits (which would challenge the frauds
    # below before the test's challenger does; tests/e2e/test_game.py plays them) are off.
    network = start_served(tmp_path_factory, serve_url, "audit", genesis_weights=True,
                           placement={"audit": {"runtime_env": {"env_vars": {SAMPLING_SWITCH: "0"}}}})
    yield network
    network.stop()


async def open_targets(client):
    epoch = (await client.get_epoch()).epoch
    for target_id in await client.get_object_ids(TARGET):
        target = await client.get_object(TARGET, target_id, Target)
        if target.status == "Open" and target.generation_epoch == epoch:
            yield target


async def honest_hit(client, tag: str):
    """(target, data, the scoring service's answer) whose real embedding lands within the threshold."""
    async for target in open_targets(client):
        manifests = await client.get_model_manifests(target.model_ids)
        for n in range(3):
            data = f"{tag} {n}: def audit(submission): return rescore(submission)\n".encode() * 4
            scored = await client.score(None, manifests, target.embedding, data=data)
            if cosine_distance_fixed(scored.embedding, target.embedding) <= target.distance_threshold:
                return target, data, manifests[scored.winner].model_id, scored
    raise AssertionError("no data lands within a target's threshold")


async def submit(client, miner, how: str) -> Target:
    """A filled target: honest, or with a fake score ("score-fraud"), or naming other bytes
    than it hashed ("data-fraud")."""
    target, data, model_id, scored = await honest_hit(client, f"{how} {miner.address.hex()[:8]}")
    embedding, distance, loss = scored.embedding_array(), scored.distance, scored.loss_score
    url = await client.upload(data, signer=miner)
    if how == "score-fraud":  # claims the target itself, at a low loss
        embedding, distance, loss = np.frombuffer(target.embedding, "<f4"), 0.0, loss / 2
    elif how == "data-fraud":
        url = await client.upload(b"not the bytes that were hashed", signer=miner)
    await client.submit_data(miner, target.id, data, url, model_id, embedding, distance, loss)
    return await client.get_object(TARGET, target.id, Target)


async def resolved(client, target_id) -> Target:
    async def settled():
        target = await client.get_object(TARGET, target_id, Target)
        return target if target.status != "Challenged" else None
    return await eventually(settled, timeout_s=RESOLVE_S, interval_s=1.0)


async def challenge_and_wait(client, how: str, kind: str, name: str):
    """Submit `how`, challenge it as `name` through the SDK, wait for the verdict; returns
    (target after, miner bond, challenger bond, challenger's balance change, miner's)."""
    miner, challenger = await funded(client, f"{name}-miner"), await funded(client, f"{name}-challenger")
    target = await submit(client, miner, how)
    bond = (await client.get_object(SUBMISSION, target.submission_id, Submission)).bond
    before = [await client.get_balance(k.address) for k in (challenger, miner)]
    challenge_id = await client.initiate_challenge(challenger, target.id, kind)
    [info] = await client.get_challenges(target_id=target.id)
    assert (info.id, info.challenger, info.kind) == (challenge_id, challenger.address,
                                                    {"score-fraud": "ScoreFraud", "data-fraud": "DataFraud"}[kind])
    after_target = await resolved(client, target.id)
    after = [await client.get_balance(k.address) for k in (challenger, miner)]
    assert await client.get_challenges(target_id=target.id) == []
    return after_target, bond, info.bond, after[0] - before[0], after[1] - before[1]


def test_a_fake_score_is_caught_the_miner_slashed_and_the_challenger_paid(audited):
    async def scenario(client):
        return await challenge_and_wait(client, "score-fraud", "score-fraud", "fake")

    target, miner_bond, _, challenger_gain, miner_gain = with_client(audited.config.public_url, scenario)
    assert target.status == "Open" and target.submission_id is None  # reopened: same epoch
    assert challenger_gain == miner_bond - 1_000  # its bond back and the miner's, less its fee
    assert miner_gain == 0  # the bond was locked at the commit and is gone


def test_data_that_is_not_what_was_hashed_is_data_fraud(audited):
    async def scenario(client):
        return await challenge_and_wait(client, "data-fraud", "data-fraud", "lying")

    target, miner_bond, _, challenger_gain, _ = with_client(audited.config.public_url, scenario)
    assert target.status == "Open" and challenger_gain == miner_bond - 1_000


def test_verify_says_whether_claims_hold_with_the_numbers(audited):
    async def scenario(client):
        miner = await funded(client, "verify-miner")
        honest, fake = await submit(client, miner, "honest"), await submit(client, miner, "score-fraud")
        return await client.verify(honest.id), await client.verify(fake.id)

    honest, fake = with_client(audited.config.public_url, scenario)
    assert (honest.claims_hold, honest.verdict) == (True, "MinerWins")
    assert abs(honest.recomputed_loss - honest.claimed_loss) < 1e-3 and honest.distance <= honest.threshold
    assert (fake.claims_hold, fake.verdict, fake.fraud) == (False, "ChallengerWins", "ScoreFraud")
    assert fake.recomputed_loss > fake.claimed_loss


@pytest.fixture()
def soma(audited, tmp_path):
    app = typer.Typer()
    app.add_typer(challenge.app)
    wallet_file = tmp_path / "wallet.json"

    def invoke(*args):
        return CliRunner().invoke(app, [*args, "--rpc-url", audited.config.public_url],
                                  env={"SOMA_WALLET": str(wallet_file)})

    invoke.wallet = wallet_file
    return invoke


def test_the_cli_challenges_an_honest_miner_who_keeps_the_fill_after_an_aggregator_restart(audited, soma):
    _, person = Wallet.load(soma.wallet).new_key("person", set_default=True)

    async def prepare(client):
        await client.request_faucet(person.address, 100 * SOMA)
        miner = await funded(client, "cli-miner")
        target = await submit(client, miner, "honest")
        return miner, target, await client.get_balance(person.address)

    miner, target, balance = with_client(audited.config.public_url, prepare)
    unknown, target_hex = "0x" + "ab" * 32, "0x" + target.id.hex()
    for args, message in ((("verify", unknown), "no target"),
                          (("challenge", "initiate", unknown, "--kind", "score-fraud"), "no target"),
                          (("challenge", "initiate", target_hex, "--kind", "lazy"), "score-fraud or data-fraud"),
                          (("challenge", "initiate", target_hex, "--kind", "score-fraud", "--bond", "0.000000001"),
                           "bond")):
        result = soma(*args)
        assert result.exit_code == 1 and message in result.output, result.output
    assert with_client(audited.config.public_url, lambda c: c.get_balance(person.address)) == balance  # nothing was sent

    verified = soma("verify", target_hex)
    assert verified.exit_code == 0 and "claims hold: yes" in verified.output, verified.output
    ray.kill(audited.aggregator, no_restart=True)  # no verdict until a new aggregator starts
    audited.aggregator = None
    opened = soma("challenge", "initiate", target_hex, "--kind", "score-fraud")
    assert opened.exit_code == 0, opened.output
    challenge_hex = opened.output.split()[1]
    listed = soma("challenge", "list", "--mine")
    info = soma("challenge", "info", challenge_hex)
    assert listed.exit_code == 0 and "1 challenges" in listed.output and "open" in listed.output, listed.output  # --mine: this one
    assert target_hex in info.output and "ScoreFraud" in info.output, info.output
    audited.start_audits()  # a fresh aggregator picks the open challenge up from the chain

    async def outcome(client):
        after = await resolved(client, target.id)
        return after, await client.get_balance(person.address), await client.get_balance(miner.address)

    after, person_balance, _ = with_client(audited.config.public_url, outcome)
    assert after.status == "Filled" and after.submission_id == target.submission_id  # MinerWins
    assert person_balance < balance - 1_000  # its bond went to the miner
    gone = soma("challenge", "info", challenge_hex)  # the chain deleted it: the index keeps how it ended
    assert gone.exit_code == 0 and "status: miner_wins" in gone.output, gone.output


def test_validator_worker_and_aggregator_killed_mid_audit_and_a_second_aggregator_resolve_once(audited):
    second = launch_aggregator(audited.config, 1)  # signs with validator 1's key

    async def scenario(client):
        miner, challenger = await funded(client, "kill-miner"), await funded(client, "kill-challenger")
        target = await submit(client, miner, "score-fraud")
        bond = (await client.get_object(SUBMISSION, target.submission_id, Submission)).bond
        before = await client.get_balance(challenger.address)
        await client.initiate_challenge(challenger, target.id, "score-fraud")
        audited.stop_validator(3)
        ray.kill(audited.audit_workers[1], no_restart=False)  # Ray restarts both
        ray.kill(audited.aggregator, no_restart=False)
        after = await resolved(client, target.id)
        return after, bond, (await client.get_balance(challenger.address)) - before

    try:
        target, miner_bond, gain = with_client(audited.config.public_url, scenario)
        stats = ray.get([audited.aggregator.stats.remote(), second.stats.remote()], timeout=60)
    finally:
        audited.relaunch_validator(3)
        ray.kill(second, no_restart=True)
    assert target.status == "Open" and gain == miner_bond - 1_000  # paid exactly once
    assert sum(s["resolved"] for s in stats) == 1


def test_a_byzantine_voter_cannot_stop_the_honest_verdict_and_its_votes_are_evidence(audited):
    byzantine = audited.config.validator_keypair(3)
    ray.kill(audited.audit_workers[3], no_restart=True)  # validator 3 votes through this test instead
    outsider = Keypair.from_secret(b"\x42" * 32)

    async def scenario(client):
        miner, challenger = await funded(client, "byz-miner"), await funded(client, "byz-challenger")
        target = await submit(client, miner, "score-fraud")
        challenge_id = await client.initiate_challenge(challenger, target.id, "score-fraud")
        chain_id = await client.chain_id()
        bad = [encode(sign_vote(byzantine, challenge_id, "MinerWins", chain_id)),
               encode(sign_vote(byzantine, challenge_id, "ChallengerWins", chain_id)),
               encode(sign_vote(outsider, challenge_id, "MinerWins", chain_id)), b"\x93garbage", {"not": "bytes"}]
        counted = [await audited.aggregator.submit_vote.remote(raw) for raw in bad]
        return counted, challenge_id, await resolved(client, target.id)

    try:
        counted, challenge_id, target = with_client(audited.config.public_url, scenario)
    finally:
        audited.audit_workers[3] = launch_audit_worker(audited.config, 3)
    assert counted == [True, False, False, False, False]
    assert target.status == "Open"  # ChallengerWins, the honest verdict
    reasons = [e.reason for e in ray.get(audited.aggregator.evidence.remote(), timeout=60)]
    assert any("conflicting" in r for r in reasons) and any("not a member" in r for r in reasons)
    assert sum("not a vote" in r for r in reasons) == 2
    assert ray.get(audited.audit_workers[0].stats.remote(), timeout=60)["audits"] >= 1


def test_bad_challenges_fail_before_anything_is_sent(audited):
    async def scenario(client):
        person = await funded(client, "careful")
        balance = await client.get_balance(person.address)
        target = await anext(open_targets(client))
        with pytest.raises(errors.TargetNotFilled):
            await client.initiate_challenge(person, target.id, "score-fraud")
        with pytest.raises(errors.ObjectNotFound):
            await client.initiate_challenge(person, b"\x01" * 32, "data-fraud")
        with pytest.raises(errors.MalformedInput):
            await client.get_challenges(status="resolved")
        with pytest.raises(errors.NoRevealedSubmission):
            await client.verify(target.id)
        return balance, await client.get_balance(person.address)

    before, after = with_client(audited.config.public_url, scenario)
    assert before == after
