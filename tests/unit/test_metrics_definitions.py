"""soma_ray/metrics.py without Ray: the definitions, the Grafana dashboard that shows them, and
what the target index counts from a checkpoint."""
import json
import re
from pathlib import Path

from soma_ray import metrics
from soma_ray.protocol.crypto import Certificate
from soma_ray.protocol.encoding import encode
from soma_ray.protocol.errors import ExecutionError
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.types import (
    ChangeEpoch, Checkpoint, InitiateChallenge, ResolveChallenge, RevealSubmission, Transaction,
    TransactionEffects, Transfer,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "soma_dashboard.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def series_of(definition: metrics.MetricDef) -> set[str]:
    """The names a definition is exported under."""
    if definition.kind == metrics.HISTOGRAM:
        return {definition.exported + suffix for suffix in HISTOGRAM_SUFFIXES}
    return {definition.exported}


def panel_series() -> dict[str, set[str]]:
    """Each panel's title -> the ray_soma_* series its expressions name."""
    dashboard = json.loads(DASHBOARD.read_text())
    return {panel["title"]: {name for target in panel["targets"]
                             for name in re.findall(r"ray_soma_[a-z0-9_]+", target["expr"])}
            for panel in dashboard["panels"]}


def test_every_metric_is_a_soma_metric_of_a_known_kind_with_a_description():
    names = [d.name for d in metrics.DEFINITIONS]
    assert len(names) == len(set(names))
    for definition in metrics.DEFINITIONS:
        assert re.fullmatch(r"soma_[a-z0-9_]+", definition.name), definition.name
        assert not definition.name.endswith("_total")  # Ray adds it to counters
        assert definition.kind in (metrics.COUNTER, metrics.GAUGE, metrics.HISTOGRAM)
        assert definition.description
        assert bool(definition.boundaries) == (definition.kind == metrics.HISTOGRAM)
        assert list(definition.boundaries) == sorted(set(definition.boundaries))


def test_every_metric_has_a_panel_and_every_panel_names_defined_metrics():
    panels = panel_series()
    defined = set().union(*(series_of(d) for d in metrics.DEFINITIONS))
    for title, names in panels.items():
        assert names, f"panel {title!r} names no soma metric"
        assert names <= defined, f"panel {title!r} names undefined series {names - defined}"
    shown = set().union(*panels.values())
    for definition in metrics.DEFINITIONS:
        assert series_of(definition) & shown, f"{definition.name} has no panel"


def test_the_network_label_is_the_prefix_else_the_namespace():
    assert metrics.network_label("soma", "") == "soma"
    assert metrics.network_label("soma-test", "metrics-1a2b3c-") == "metrics-1a2b3c"


def _signed(kind, nonce: int) -> bytes:
    key = preset_keypair("metrics-user", 0)
    return encode(sign_transaction(key, Transaction(sender=key.address, nonce=nonce, kind=kind, max_fee=1), bytes(32)))


def _checkpoint(entries: list[tuple[bytes, bool]]) -> tuple[Checkpoint, list[TransactionEffects]]:
    """A checkpoint of `entries` (raw entry, executed without error) and their effects."""
    failed = ExecutionError(code="InsufficientGas", fields=[])
    effects = [TransactionEffects(transaction_digest=bytes(32), sender=bytes(32), nonce=0, fee_charged=0,
                                  error=None if ok else failed) for _, ok in entries]
    return Checkpoint(epoch=0, sequence=1, previous_digest=bytes(32), timestamp_ms=0,
                      transactions=[raw for raw, _ in entries], effects_digest=bytes(32),
                      state_root=bytes(32)), effects


def test_feed_events_count_hits_and_challenges_of_transactions_that_executed():
    reveal = RevealSubmission(submission_id=bytes(32), data_hash=bytes(32), data_size=1, data_url="u",
                              model_id=bytes(32), embedding=b"", loss_score=0, nonce=bytes(32))
    challenge = InitiateChallenge(submission_id=bytes(32), kind="ScoreFraud", bond=1)
    certificate = Certificate(signer_indices=[], signatures=[])
    checkpoint, effects = _checkpoint([
        (_signed(reveal, 0), True), (_signed(reveal, 1), True), (_signed(reveal, 2), False),
        (_signed(challenge, 3), True), (_signed(challenge, 4), False),
        (_signed(ResolveChallenge(challenge_id=bytes(32), verdict="ChallengerWins", certificate=certificate), 5), True),
        (_signed(ResolveChallenge(challenge_id=bytes(32), verdict="MinerWins", certificate=certificate), 6), True),
        (_signed(Transfer(recipient=bytes(32), amount=1), 7), True),
        (encode(ChangeEpoch(epoch=1, timestamp_ms=0)), True),
    ])
    assert metrics.feed_events(checkpoint, effects) == {"hit": 2, "opened": 1, "ChallengerWins": 1,
                                                        "MinerWins": 1}


def test_a_checkpoint_without_hits_or_challenges_has_no_events():
    checkpoint, effects = _checkpoint([(_signed(Transfer(recipient=bytes(32), amount=1), 0), True)])
    assert not metrics.feed_events(checkpoint, effects)

