"""The board on geometry built by hand: three models on known axes, targets clustered around
them, hits, a target no model reaches; the map is stable and the standings ranked."""
import json
import socket

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from soma_ray.board import build_board, miner_standings, model_standings, project_2d
from soma_ray.cli.main import app
from soma_ray.wire import Leaderboard, MinerScore, ModelScore, ModelView, TargetView
from soma_ray.protocol import errors

DIM = 8
A, B, C = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32  # models at +e0, +e1, -e0


def axis(i, sign=1.0, noise=0.0, seed=0):
    vector = np.zeros(DIM, dtype=np.float32)
    vector[i] = sign
    vector += np.random.default_rng(seed).normal(0, noise, DIM).astype(np.float32)
    return vector


def model(model_id, embedding, stake=10):
    return ModelView(model_id, owner=bytes(32), status="Active", embedding=embedding.astype("<f4").tobytes(),
                     stake=stake, commission_bps=500, has_pending_update=False)


def target(n, embedding, status="open", winner=None, threshold=1.05):
    return TargetView(
        id=bytes([n]) * 32, status=status, embedding=embedding.astype("<f4").tobytes(), model_ids=[A, B, C],
        distance_threshold=threshold, threshold_fixed=int(threshold * 10**9), reward_pool=1, generation_epoch=0,
        bond_amount=1, submission_id=None, submitter=None if winner is None else bytes(32), winning_model_id=winner,
        fill_epoch=None, claimable_epoch=None, reveal_deadline_ms=None, settled_epoch=None)


MODELS = [model(C, axis(0, -1.0)), model(A, axis(0), stake=30), model(B, axis(1))]
TARGETS = [
    target(10, axis(0, noise=0.1, seed=1)),
    target(11, axis(0, noise=0.1, seed=2), status="filled", winner=A),
    target(12, axis(0, noise=0.1, seed=3), status="claimable", winner=B),  # a hit of another model, here
    target(13, axis(0, noise=0.1, seed=4), status="settled"),  # an expired target claimed: no hit
    target(14, axis(1, noise=0.1, seed=5), status="expired"),
    target(15, axis(2) + 0.2 * axis(1), threshold=0.5),  # nearest B, but beyond its threshold
]


def test_targets_join_their_nearest_model_and_hits_count_per_region():
    board = build_board(MODELS, TARGETS)
    assert [r.model_id for r in board.regions] == [A, B, C]  # by id, whatever the input order
    a, b, c = board.regions
    assert (a.targets, a.open, a.hits, a.hit_rate) == (4, 1, 2, 0.5)
    assert (b.targets, b.open, b.hits, b.hit_rate) == (2, 1, 0, 0.0)
    assert (c.targets, c.hits, c.hit_rate) == (0, 0, None)
    assert [(t.target_id[0], t.region) for t in board.targets] == [
        (10, A), (11, A), (12, A), (13, A), (14, B), (15, B)]
    assert a.stake == 30


def test_niches_are_crowded_regions_and_targets_no_model_reaches():
    board = build_board(MODELS, TARGETS)
    a, b, c = board.regions
    assert a.niche == ("many targets",)  # 4 targets against a mean of 2 per model
    assert (b.far, b.niche) == (1, ("far targets",))
    assert c.niche == ()
    [far] = board.far_targets
    assert far.target_id[0] == 15 and far.distance > 0.5
    assert not any(t.far for t in board.targets if t.target_id[0] == 14)  # expired: no longer a chance


def test_without_models_every_open_target_is_far_and_no_region_exists():
    board = build_board([], TARGETS)
    assert board.regions == [] and board.models == []
    assert {t.target_id[0] for t in board.far_targets} == {10, 15}
    assert all(t.region is None and t.distance is None for t in board.targets)


def test_the_map_separates_clusters_and_does_not_depend_on_input_order():
    board = build_board(MODELS, TARGETS)
    shuffled = build_board(MODELS[::-1], TARGETS[::-1])
    place = {m.model_id: (m.x, m.y) for m in board.models} | {t.target_id: (t.x, t.y) for t in board.targets}
    again = {m.model_id: (m.x, m.y) for m in shuffled.models} | {t.target_id: (t.x, t.y) for t in shuffled.targets}
    assert place.keys() == again.keys()
    for key in place:
        assert place[key] == pytest.approx(again[key], abs=1e-9)
    mapped = {m.model_id: np.array([m.x, m.y]) for m in board.models}
    for t in board.targets:  # each of A's targets is drawn nearer A than the opposite model C
        if t.region == A:
            point = np.array([t.x, t.y])
            assert np.linalg.norm(point - mapped[A]) < np.linalg.norm(point - mapped[C])


def test_each_component_points_its_largest_loading_positive():
    rows = np.array([[3.0, 0.1, 0.0], [-3.0, 0.0, 0.1], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    for sign in (1.0, -1.0):  # the same points, mirrored: the same map
        xy = project_2d(sign * rows)
        assert xy[0 if sign > 0 else 1, 0] > 0  # the point at +3 e0 lies right
        assert xy[2 if sign > 0 else 3, 1] > 0  # the point at +1 e1 lies up
    assert project_2d(rows[:1]).tolist() == [[0.0, 0.0]]  # one point: nothing to spread


def test_bad_embeddings_are_typed_errors():
    with pytest.raises(errors.EmbeddingDimensionMismatch):
        build_board(MODELS, [target(20, np.ones(DIM + 1, dtype=np.float32))])
    with pytest.raises(errors.NonFiniteEmbedding):
        build_board([model(A, np.full(DIM, np.nan, dtype=np.float32))], [])
    unrevealed = ModelView(A, bytes(32), "Active", None, 1, 0, False)
    with pytest.raises(errors.MalformedInput):
        build_board([unrevealed], [])
    with pytest.raises(errors.MalformedInput):
        build_board(MODELS + MODELS[:1], [])


def test_a_zero_embedding_is_at_distance_one_from_everything():
    board = build_board([model(A, np.zeros(DIM, dtype=np.float32))], [target(30, axis(3))])
    [placed] = board.targets
    assert (placed.region, placed.distance, placed.far) == (A, 1.0, False)


def test_standings_rank_ties_together_and_show_active_stakes():
    leaderboard = Leaderboard(
        models=[ModelScore(A, 3, 50), ModelScore(B, 3, 50), ModelScore(C, 1, 90), ModelScore(bytes(32), 1, 10)],
        miners=[MinerScore(bytes([7]) * 32, 2, 5), MinerScore(bytes([8]) * 32, 1, 5)])
    models = model_standings(leaderboard, MODELS)
    assert [(s.rank, s.model_id, s.stake) for s in models] == [
        (1, A, 30), (1, B, 10), (3, C, 10), (4, bytes(32), None)]  # the last is not active
    assert [(s.rank, s.hits, s.rewards) for s in miner_standings(leaderboard)] == [(1, 2, 5), (2, 1, 5)]


def test_an_unreachable_gateway_is_a_one_line_error_and_writes_no_map(tmp_path):
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        result = CliRunner().invoke(app, ["board", "--rpc-url", url, "--plot", str(tmp_path / "b.png")])
    [line] = result.output.strip().splitlines()
    assert result.exit_code == 1 and line.startswith("error: ") and "cannot be reached" in line
    assert not (tmp_path / "b.png").exists()



# ------------------------------------------------------------------ the learning curve (--held-out)

def test_the_held_out_history_keeps_one_point_per_epoch_and_draws_the_curve(tmp_path):
    from soma_ray.board import held_out_point, learning_curve, merge_point
    from soma_ray.cli.board import draw_map, keep_point
    from soma_ray.heldout import ModelLoss, NetworkLoss

    def loss(best, routed):
        return NetworkLoss(best, routed, [ModelLoss(A, 10, routed + 1, 2, 1), ModelLoss(B, 10, best + 1, 1, 2)], 3, {})

    point = held_out_point(3, loss(6.0, 6.5))
    assert point == {"epoch": 3, "network_loss_bpb": 6.0, "network_routed_bpb": 6.5,
                     "models": {"0x" + A.hex(): 7.5, "0x" + B.hex(): 7.0}}
    history = merge_point([held_out_point(5, loss(5.0, 5.5)), {"junk": 1}, point], held_out_point(3, loss(5.8, 6.1)))
    assert [(p["epoch"], p["network_loss_bpb"]) for p in history] == [(3, 5.8), (5, 5.0)]  # a later point wins
    assert learning_curve(history) == ([3, 5], [5.8, 5.0], [6.1, 5.5])
    path = tmp_path / "board" / "held-out.json"
    path.parent.mkdir()
    path.write_text("not json")  # an unreadable history starts a new one
    kept = keep_point(path, held_out_point(0, loss(8.0, 8.2)))
    kept = keep_point(path, held_out_point(1, loss(7.0, 7.4)))
    assert [p["epoch"] for p in kept] == [0, 1] and len(json.loads(path.read_text())) == 2
    png = tmp_path / "map.png"
    draw_map(build_board(MODELS, TARGETS), png, kept)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(png).size == (1400, 600)  # the map and the curve beside it
