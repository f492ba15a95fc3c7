"""The miner's commands' decisions without a network: which targets are best, what is refused
before anything is sent, how files are bounded, what the user reads."""
import numpy as np
import pytest
from typer.testing import CliRunner

from soma_ray.cli import common, data
from soma_ray.cli import target as target_cli
from soma_ray.cli.common import BadArgument, show_amount
from soma_ray.cli.main import app
from soma_ray.wire import TargetView
from soma_ray.protocol import errors
from soma_ray.protocol.params import Parameters
from soma_ray.protocol.submissions import claim_split, required_bond
from soma_ray.protocol.targets import cosine_distance_fixed

PARAMS = Parameters()
A, B, C = (bytes([i]) * 32 for i in (1, 2, 3))


def target(n: int, reward: int = 1_000, models=(A, B), status: str = "open", threshold: int = 1_050_000_000,
           embedding=(1.0, 0.0), fill_epoch=None) -> TargetView:
    return TargetView(
        id=bytes([n]) * 32, status=status, embedding=np.asarray(embedding, "<f4").tobytes(),
        model_ids=list(models), distance_threshold=threshold / 1e9, threshold_fixed=threshold,
        reward_pool=reward, generation_epoch=0, bond_amount=PARAMS.submission_min_bond,
        submission_id=None, submitter=None, winning_model_id=None, fill_epoch=fill_epoch,
        claimable_epoch=None if fill_epoch is None else fill_epoch + 2, reveal_deadline_ms=None,
        settled_epoch=None)


def scored(view: TargetView, distance: int) -> data.Scored:
    return data.Scored(view, A, 2.5, np.asarray([1.0, 0.0], "<f4").tobytes(), distance)


# ------------------------------------------------------------------ the best targets


def test_a_file_is_scored_once_per_model_set_the_sets_with_most_reward_first():
    targets = [target(1, 10, (A, B)), target(2, 50, (B, C)), target(3, 30, (A, B)), target(4, 5, (C,))]
    groups = data.model_sets_to_score(targets, limit=2)
    assert [[t.id[0] for t in group] for group in groups] == [[2], [1, 3]]  # 50 vs 10 + 30; (C,) left out


def test_the_same_models_in_another_order_are_one_set():
    # Were each order its own set, (A, B) and (B, A) would take two of the limit's slots (and be
    # scored twice); with one slot, target 1 would be left out.
    targets = [target(1, 10, (A, B)), target(2, 50, (B, A)), target(3, 30, (C,))]
    groups = data.model_sets_to_score(targets, limit=1)
    assert [[t.id[0] for t in group] for group in groups] == [[1, 2]]


def test_every_target_of_a_set_gets_the_chains_own_distance():
    near, far = target(1, embedding=(1.0, 0.1)), target(2, embedding=(-1.0, 0.2))
    embedding = np.asarray([0.9, 0.0], "<f4").tobytes()
    found = data.scored_for([near, far], A, 2.5, embedding)
    assert [s.distance for s in found] == [cosine_distance_fixed(embedding, t.embedding) for t in (near, far)]
    assert [s.hit for s in found] == [True, False]


def test_best_is_the_richest_hit_then_the_nearest_and_misses_come_last_by_their_margin():
    rich_far, rich_near, poor = target(1, 900), target(2, 900), target(3, 100)
    just_over, well_over = target(4, 5_000, threshold=1_000), target(5, 9_000, threshold=1_000)
    ranked = data.rank([scored(poor, 10), scored(well_over, 1_900), scored(rich_far, 500),
                        scored(just_over, 1_001), scored(rich_near, 400)])
    assert [s.target.id[0] for s in ranked] == [2, 1, 3, 4, 5]
    assert [s.hit for s in ranked] == [True, True, True, False, False]


def test_a_distance_equal_to_the_threshold_is_a_hit():
    assert scored(target(1, threshold=700), 700).hit and not scored(target(1, threshold=700), 701).hit


# ------------------------------------------------------------------ refused before anything is sent


def test_a_submission_is_refused_over_the_threshold_or_without_the_bond_and_both_fees():
    hit, size = scored(target(1), 900_000_000), 700
    needed = required_bond(PARAMS, size) + 2 * PARAMS.base_fee
    assert data.submit_refusal(hit, PARAMS, needed, size) is None
    poor = data.submit_refusal(hit, PARAMS, needed - 1, size)
    assert isinstance(poor, errors.InsufficientBalance) and (poor.required, poor.available) == (needed, needed - 1)
    miss = data.submit_refusal(scored(target(1), 1_050_000_001), PARAMS, needed, size)
    assert isinstance(miss, errors.DistanceExceedsThreshold)
    assert (miss.distance, miss.threshold) == (1_050_000_001, 1_050_000_000)


def test_only_an_open_target_takes_a_submission():
    assert data.open_refusal(target(1), 3) is None
    expired = data.open_refusal(target(1, status="expired"), 3)
    assert isinstance(expired, errors.TargetExpired) and expired.current_epoch == 3
    assert isinstance(data.open_refusal(target(1, status="filled", fill_epoch=0), 0), errors.TargetNotOpen)


@pytest.mark.parametrize("status, fill_epoch, epoch, refused", [
    ("claimable", 1, 3, None),
    ("expired", None, 3, None),
    ("filled", 1, 2, errors.AuditWindowOpen),
    ("filled", 1, 3, None),  # the chain's epoch says claimable: the index has not caught up yet
    ("open", None, 0, errors.TargetNotFilled),
    ("settled", 1, 5, errors.TargetNotFilled),
])
def test_a_claim_is_refused_before_its_audit_window_closes(status, fill_epoch, epoch, refused):
    found = target_cli.claim_refusal(target(1, status=status, fill_epoch=fill_epoch), epoch)
    assert (found is None) if refused is None else isinstance(found, refused)
    if isinstance(found, errors.AuditWindowOpen):
        assert (found.claimable_epoch, found.current_epoch) == (3, 2)


def test_a_file_is_read_up_to_the_networks_limit_only(tmp_path):
    exact, over = tmp_path / "exact.bin", tmp_path / "over.bin"
    exact.write_bytes(b"x" * 64)
    over.write_bytes(b"x" * 65)
    assert data.read_data_file(exact, 64) == b"x" * 64
    with pytest.raises(errors.DataTooLarge) as large:
        data.read_data_file(over, 64)
    assert (large.value.size, large.value.max) == (65, 64)
    with pytest.raises(BadArgument, match="does not exist"):
        data.read_data_file(tmp_path / "missing.bin", 64)
    with pytest.raises(BadArgument, match="cannot be read"):
        data.read_data_file(tmp_path, 64)
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(BadArgument, match="is empty"):
        data.read_data_file(tmp_path / "empty.bin", 64)


# ------------------------------------------------------------------ what the user reads


def test_errors_read_in_cosine_distances_and_soma_with_the_chains_numbers():
    assert common.in_words(errors.DistanceExceedsThreshold(distance=1_078_232_058, threshold=1_050_000_000)) == (
        "not a hit: the distance 1.078232 is over the target's threshold 1.050000 "
        "(1078232058 > 1050000000 in 1e-9 units)")
    assert common.in_words(errors.InsufficientBalance(required=68_560, available=50_000)) == (
        "needs 0.00006856 SOMA (68560 shannons), the account has 0.00005 SOMA")
    assert common.in_words(errors.DataTooLarge(size=2_000_000, max=1_048_576)) == (
        "the file is 2000000 bytes, the network takes at most 1048576 bytes per submission")
    assert common.in_words(errors.AuditWindowOpen(claimable_epoch=3, current_epoch=1)) == (
        "rewards can be claimed from epoch 3 (now 1) (AuditWindowOpen)")


def test_a_claim_report_names_the_protocols_split():
    reward = 1_370 * 10**9 // 10
    fee, miner, model = claim_split(PARAMS, reward)
    report = target_cli.claim_report(target(1, reward, status="claimable", fill_epoch=1), PARAMS)
    assert report.startswith(f"paid: finder's fee {show_amount(fee)} to you, {show_amount(miner)} to the miner")
    assert f"{show_amount(model)} to model" in report
    expired = target_cli.claim_report(target(1, reward, status="expired"), PARAMS)
    assert expired == f"paid: finder's fee {show_amount(fee)} to you; {show_amount(reward - fee)} back to emissions"


def test_a_target_row_shows_soma_and_cosine_distances():
    row = target_cli.target_row(target(1, 2_500_000_000, fill_epoch=4))
    assert row == ["0x" + "01" * 32, "open", "2.5 SOMA", "1.050000", "2", "0.000001 SOMA", "4"]


def test_the_status_filter_defaults_to_open_or_to_all_of_mine():
    assert target_cli.read_status(None, mine=False) == "open"
    assert target_cli.read_status(None, mine=True) is None
    assert target_cli.read_status("ALL", mine=False) is None and target_cli.read_status("Claimable", mine=False) == "claimable"
    with pytest.raises(BadArgument, match="one of open, expired, filled, claimable, settled or all"):
        target_cli.read_status("won", mine=False)


def test_command_line_mistakes_are_one_error_line_before_any_connection(tmp_path):
    runner = CliRunner()
    unreachable = {"SOMA_RPC_URL": "http://127.0.0.1:9", "SOMA_WALLET": str(tmp_path / "w.json")}
    runner.invoke(app, ["wallet", "new", "--name", "me"], env=unreachable)
    for args, words in ((["target", "claim"], "give a target id or --all"),
                        (["target", "claim", "0x" + "00" * 32, "--all"], "give a target id or --all"),
                        (["target", "list", "--status", "won"], "one of open"),
                        (["target", "info", "0x12"], "expected 0x followed by 64 hex digits"),
                        (["stake", "add", "nothex", "1"], "expected 0x followed by 64 hex digits"),
                        (["stake", "add", "0x" + "00" * 32, "0"], "a positive number of SOMA")):
        result = runner.invoke(app, args, env=unreachable)
        assert result.exit_code == 1 and result.output.startswith("error: ") and words in result.output, (
            args, result.output)


def test_the_best_targets_table_names_each_model_sets_winner_once():
    shown = [scored(target(1), 10), scored(target(2), 20),
             data.Scored(target(3, models=(C,)), C, 1.25, b"", 30)]
    assert data.winner_lines(shown) == [f"winner model 0x{'01' * 32}, loss 2.500000",
                                        f"winner model 0x{'03' * 32}, loss 1.250000"]
    assert data.score_row(shown[0]) == ["0x" + "01" * 32, "0.000001 SOMA", "0.000000", "1.050000", "hit", "2.500000"]
