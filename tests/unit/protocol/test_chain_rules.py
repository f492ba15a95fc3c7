"""The chain's epoch rules and amounts as the protocol states them once (`targets.py`, `models.py`,
`staking.py`, `submissions.py`): the process_* functions, the SDK's and the CLI's pre-checks, the
strategies and the target index all call these, so they are pinned here."""
import pytest

from soma_ray.protocol.errors import InvalidModelStatus, ModelRevealEpochMismatch, NotOwner
from soma_ray.protocol.models import (
    AwaitedReveal, awaited_commit, awaited_reveal, model_commitment, require_commit_allowed, require_deactivatable,
    require_model_owner, reveal_allowed, reveal_epoch, reveal_missed,
)
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.staking import stake_activation_epoch, stake_is_active
from soma_ray.protocol.state import MODEL
from soma_ray.protocol.submissions import challenge_bond_for, required_bond, submission_cost
from soma_ray.protocol.targets import (
    accepts_commit, challenge_allowed, claimable_epoch, is_claimable, is_expired, last_challenge_epoch,
)
from soma_ray.protocol.types import Model, PendingUpdate, RevealModel, WeightsManifest

from test_models import KEY, commit_for, create, embedding

OWNER = b"\x02" * 32
MANIFEST = WeightsManifest(url="http://blobs/w", checksum=b"c" * 32, size=10)


def model(status="Pending", commit_epoch=3, pending_update=None) -> Model:
    return Model(id=b"\x01" * 32, owner=OWNER, architecture_version=1, status=status, commission_bps=0,
                 staking_pool_id=b"\x03" * 32, weights_manifest=MANIFEST, key_commitment=b"k" * 32,
                 embedding_commitment=b"e" * 32, commit_epoch=commit_epoch, pending_update=pending_update)


# ------------------------------------------------------------------ a target's epochs

def test_an_open_target_takes_commits_in_its_generation_epoch_only_and_is_expired_after_it():
    assert [accepts_commit(5, epoch) for epoch in (4, 5, 6)] == [False, True, False]
    assert [is_expired(5, epoch) for epoch in (4, 5, 6, 9)] == [False, False, True, True]


def test_a_fill_may_be_challenged_through_the_next_epoch_and_claimed_after_that():
    assert (last_challenge_epoch(3), claimable_epoch(3)) == (4, 5)
    assert [challenge_allowed(3, epoch) for epoch in (3, 4, 5, 6)] == [True, True, False, False]
    assert [is_claimable(3, epoch) for epoch in (3, 4, 5, 6)] == [False, False, True, True]


@pytest.mark.parametrize("fill_epoch", [0, 1, 7])
def test_every_epoch_after_a_fill_is_either_in_its_challenge_window_or_claimable(fill_epoch):
    for epoch in range(fill_epoch, fill_epoch + 6):
        assert challenge_allowed(fill_epoch, epoch) != is_claimable(fill_epoch, epoch)
    assert is_claimable(fill_epoch, claimable_epoch(fill_epoch))
    assert not is_claimable(fill_epoch, claimable_epoch(fill_epoch) - 1)


# ------------------------------------------------------------------ a model's epochs and statuses

def test_a_commit_is_revealed_in_the_next_epoch_only_and_missed_after_it():
    assert reveal_epoch(3) == 4
    assert [reveal_allowed(3, epoch) for epoch in (3, 4, 5)] == [False, True, False]
    assert [reveal_missed(3, epoch) for epoch in (3, 4, 5, 6)] == [False, False, True, True]


def test_the_awaited_reveal_is_the_first_commit_or_the_pending_update():
    assert awaited_reveal(model(commit_epoch=3)) == AwaitedReveal(3, b"k" * 32, b"e" * 32)
    update = PendingUpdate(MANIFEST, b"w", b"E" * 32, b"K" * 32, 7)
    assert awaited_reveal(model("Active", pending_update=update)) == AwaitedReveal(7, b"K" * 32, b"E" * 32)
    for status in ("Created", "Active", "Inactive"):
        assert awaited_commit(model(status)) is None
        with pytest.raises(InvalidModelStatus, match="needs Pending, or Active with a pending update"):
            awaited_reveal(model(status))
    assert awaited_commit(model("Active", pending_update=update)) == AwaitedReveal(7, b"K" * 32, b"E" * 32)


def test_commits_and_deactivations_are_taken_by_the_statuses_the_chain_takes_them_in():
    update = PendingUpdate(MANIFEST, b"w", b"E" * 32, b"K" * 32, 7)
    require_commit_allowed(model("Created"))
    require_commit_allowed(model("Active"))
    with pytest.raises(InvalidModelStatus, match="Active with a pending update"):
        require_commit_allowed(model("Active", pending_update=update))
    for status in ("Pending", "Inactive"):
        with pytest.raises(InvalidModelStatus, match=f"model is {status}"):
            require_commit_allowed(model(status))
    require_deactivatable(model("Created"))
    require_deactivatable(model("Active"))
    for status in ("Pending", "Inactive"):
        with pytest.raises(InvalidModelStatus, match="needs Created or Active"):
            require_deactivatable(model(status))
    require_model_owner(model(), OWNER)
    with pytest.raises(NotOwner):
        require_model_owner(model(), b"\x09" * 32)


def test_process_reveal_model_accepts_the_reveal_in_the_epoch_the_rule_names_only(net):
    owner = net.users[0]
    created = create(net, owner)
    emb = embedding(net.params.embedding_dim)
    net.ok(owner, commit_for(created.id, emb))
    committed = net.state.require(MODEL, created.id, Model)
    due = awaited_reveal(committed)
    assert due.key_commitment == model_commitment(KEY) and due.embedding_commitment == model_commitment(emb)
    epoch = net.state.system().epoch
    assert not reveal_allowed(due.commit_epoch, epoch)
    net.fails(owner, RevealModel(created.id, KEY, emb),
              ModelRevealEpochMismatch(commit_epoch=due.commit_epoch, current_epoch=epoch))
    net.advance()
    assert reveal_allowed(due.commit_epoch, net.state.system().epoch)
    net.ok(owner, RevealModel(created.id, KEY, emb))
    assert net.state.require(MODEL, created.id, Model).status == "Active"


# ------------------------------------------------------------------ stake and amounts

def test_stake_added_in_an_epoch_is_active_from_the_next():
    assert stake_activation_epoch(4) == 5
    assert [stake_is_active(5, epoch) for epoch in (4, 5, 6)] == [False, True, True]


def test_the_bond_and_the_cost_of_a_submission_by_size():
    params = Parameters()
    small = params.submission_min_bond // params.bond_per_byte - 1
    large = params.submission_min_bond // params.bond_per_byte + 1_000
    assert required_bond(params, 0) == required_bond(params, small) == params.submission_min_bond
    assert required_bond(params, large) == large * params.bond_per_byte
    assert submission_cost(params, large) == required_bond(params, large) + 2 * params.base_fee


def test_the_least_challenge_bond_is_the_ratio_of_the_submissions_rounded_up():
    params = Parameters(challenge_bond_ratio_bps=5_000)
    assert [challenge_bond_for(params, bond) for bond in (0, 1, 2, 3, 1_000)] == [0, 1, 1, 2, 500]
