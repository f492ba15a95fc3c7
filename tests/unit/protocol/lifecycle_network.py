"""A localnet Simulator driven by signed transactions, one per checkpoint, with the supply
invariant of spec §3 checked after every checkpoint (shared by the target lifecycle tests)."""
from soma_ray.protocol.crypto import sign_certificate
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.genesis import localnet_config, preset_keypair
from soma_ray.protocol.sim import Simulator
from soma_ray.protocol.state import SUBMISSION, TARGET
from soma_ray.protocol.submissions import challenge_vote_domain, challenge_vote_message, submission_commitment
from soma_ray.protocol.supply import total_supply
from soma_ray.protocol.types import (
    ClaimRewards, CommitSubmission, InitiateChallenge, ResolveChallenge, RevealSubmission,
    Submission, Target,
)

MINER, RIVAL, CHALLENGER, CLAIMER = (preset_keypair("user", i) for i in range(4))
VALIDATORS = [preset_keypair("validator", i) for i in range(4)]
DATA = b"bytes the miner found"


class Network:
    def __init__(self, config=None):
        self.sim = Simulator(config or localnet_config(validators=4, models=3, users=4))
        self.supply = total_supply(self.sim.state)

    @property
    def state(self):
        return self.sim.state

    def checkpoint(self, timestamp_ms=None):
        _, effects = self.sim.make_checkpoint(timestamp_ms)
        assert total_supply(self.state) == self.supply
        return effects

    def advance_epoch(self):
        _, effects = self.sim.advance_epoch()
        assert total_supply(self.state) == self.supply
        return effects

    def run(self, keypair, kind, timestamp_ms=None):
        """One transaction in its own checkpoint; returns its effects."""
        self.sim.submit_kind(keypair, kind)
        (effects,) = self.checkpoint(timestamp_ms)
        return effects

    @property
    def epoch(self) -> int:
        return self.state.system().epoch

    def target(self, target_id) -> Target | None:
        return self.state.get(TARGET, target_id, Target)

    def submission(self, submission_id) -> Submission | None:
        return self.state.get(SUBMISSION, submission_id, Submission)

    def open_targets(self) -> list[Target]:
        """The targets generated for this epoch that are still Open."""
        return [t for t in self.state.values(TARGET, Target)
                if t.status == "Open" and t.generation_epoch == self.epoch]

    def open_target(self) -> Target:
        return self.open_targets()[0]

    def balance(self, keypair) -> int:
        return self.state.account(keypair.address).balance

    def reveal_kind(self, target: Target, submission_id: bytes) -> RevealSubmission:
        return RevealSubmission(
            submission_id, blake2b256(DATA), len(DATA), "http://blobs/" + blake2b256(DATA).hex(),
            target.model_ids[0], target.embedding, 7, b"secret nonce",
        )

    def commit_kind(self, target: Target, bond=10_000) -> CommitSubmission:
        r = self.reveal_kind(target, b"")
        return CommitSubmission(target.id, submission_commitment(r.data_hash, r.data_size, r.model_id, r.embedding, r.loss_score, r.nonce), bond)

    def commit(self, target: Target, miner=MINER, bond=10_000) -> bytes:
        effects = self.run(miner, self.commit_kind(target, bond))
        assert effects.error is None, effects.error
        return effects.created[0]

    def fill(self, target: Target, miner=MINER, bond=10_000) -> bytes:
        submission_id = self.commit(target, miner, bond)
        assert self.run(miner, self.reveal_kind(target, submission_id)).error is None
        return submission_id

    def challenge(self, submission_id: bytes) -> bytes:
        effects = self.run(CHALLENGER, InitiateChallenge(submission_id, "DataFraud", 5_000))
        assert effects.error is None
        return effects.created[0]

    def resolve(self, challenge_id: bytes, verdict: str):
        committee = self.state.system().committee
        cert = sign_certificate(committee, VALIDATORS[:3], challenge_vote_domain(self.state.system().chain_id),
                                challenge_vote_message(challenge_id, verdict))
        return self.run(CLAIMER, ResolveChallenge(challenge_id, verdict, cert))

    def claim(self, target_id: bytes, claimer=CLAIMER):
        return self.run(claimer, ClaimRewards(target_id))
