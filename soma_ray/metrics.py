"""The network's metrics (ray.util.metrics), defined in one place; docs/metrics.md.

    metrics.CHECKPOINTS.record(1, tags)          # tags: a dict of the metric's tag keys
    metrics.record_audit(config, validator, verdict, seconds)

Every name starts `soma_`; Ray exports it as `ray_soma_…` (a counter as `…_total`, a histogram
as `…_bucket`, `…_count`, `…_sum`) on the metrics export port of the node whose process recorded
it. The Ray metric objects are made on first use, in the process that records (an actor or a
Serve replica), never at import. `SOMA_METRICS=0` in a process's environment (for actors: their
runtime_env) turns every record there into a no-op: the overhead benchmark's switch.

What counts as a hit or a challenge event is decided by a pure function (`feed_events`),
tested without Ray.
"""
from __future__ import annotations

import os
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

import ray
from prometheus_client.parser import text_string_to_metric_families
from ray.util import metrics as ray_metrics

from soma_ray.config import NetworkConfig
from soma_ray.protocol.checkpoint import executed_transactions
from soma_ray.protocol.targets import DISTANCE_SCALE
from soma_ray.protocol.types import (
    Checkpoint, InitiateChallenge, ResolveChallenge, RevealSubmission, TransactionEffects,
)

ENABLED = os.environ.get("SOMA_METRICS", "1") != "0"

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)

_made: dict[str, ray_metrics.Metric] = {}  # this process's Ray metric objects, by name


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: str  # COUNTER, GAUGE or HISTOGRAM
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] = field(default=())

    @property
    def exported(self) -> str:
        """The series name Ray exports (histograms add _bucket, _count and _sum to it)."""
        return f"ray_{self.name}_total" if self.kind == COUNTER else f"ray_{self.name}"

    def record(self, value: float, tags: dict[str, str]) -> None:
        """Add `value` to a counter (nothing for 0), set a gauge, observe a histogram."""
        if not ENABLED or (self.kind == COUNTER and value <= 0):
            return
        metric = _made.get(self.name) or _make(self)
        if self.kind == COUNTER:
            metric.inc(value, tags)
        elif self.kind == GAUGE:
            metric.set(value, tags)
        else:
            metric.observe(value, tags)


def _make(definition: MetricDef) -> ray_metrics.Metric:
    args = (definition.name, definition.description)
    if definition.kind == COUNTER:
        made = ray_metrics.Counter(*args, tag_keys=definition.tag_keys)
    elif definition.kind == GAUGE:
        made = ray_metrics.Gauge(*args, tag_keys=definition.tag_keys)
    else:
        made = ray_metrics.Histogram(*args, boundaries=list(definition.boundaries),
                                     tag_keys=definition.tag_keys)
    _made[definition.name] = made
    return made


_VALIDATOR = ("network", "validator")

# -- validators (actors/validator.py, actors/intake.py) ----------------------------------------
CHECKPOINTS = MetricDef("soma_checkpoints", COUNTER,
                        "Certified checkpoints this validator committed (consensus or catch-up)",
                        _VALIDATOR)
FINALIZED_TRANSACTIONS = MetricDef(
    "soma_finalized_transactions", COUNTER,
    "Transactions in the certified checkpoints this validator committed (failed executions and "
    "epoch changes included)", _VALIDATOR)
FINALITY_SECONDS = MetricDef(
    "soma_finality_seconds", HISTOGRAM,
    "Seconds from a transaction's admission at this validator to its certified checkpoint "
    "(transactions submitted to this validator)", _VALIDATOR, SECONDS)
MEMPOOL_TRANSACTIONS = MetricDef("soma_mempool_transactions", GAUGE,
                                 "Transactions waiting in this validator's mempool", _VALIDATOR)
# -- the epoch clock (actors/epoch_clock.py) ----------------------------------------------------
EPOCH = MetricDef("soma_epoch", GAUGE, "The current epoch, as the epoch clock last observed it",
                  ("network",))
# -- the target index, following the feed (actors/target_state.py) -----------------------------
TARGETS = MetricDef("soma_targets", GAUGE,
                    "Targets in the index by status (open, expired, filled, claimable, settled)",
                    ("network", "status"))
DISTANCE_THRESHOLD = MetricDef("soma_distance_threshold", GAUGE,
                               "The distance threshold of new targets (cosine distance)",
                               ("network",))
HITS = MetricDef("soma_hits", COUNTER,
                 "Revealed submissions that filled a target (a later ChallengerWins undoes one)",
                 ("network",))
CHALLENGES = MetricDef("soma_challenges", COUNTER,
                       "Challenges by event: opened, or resolved as ChallengerWins or MinerWins",
                       ("network", "event"))
# -- audit workers (actors/audit.py) -------------------------------------------------------------
AUDITS = MetricDef("soma_audits", COUNTER, "Audits this validator completed, by its verdict",
                   ("network", "validator", "verdict"))
AUDIT_SECONDS = MetricDef("soma_audit_seconds", HISTOGRAM,
                          "Seconds one audit took (download and scoring included)", _VALIDATOR,
                          SECONDS)
# -- sampling audits (actors/audit.py; soma_ray/node/sampling.py) --------------------------------
SAMPLING_AUDITS = MetricDef(
    "soma_sampling_audits", COUNTER,
    "Fills this validator settled as their sampling auditor, by outcome (holds, ScoreFraud, "
    "DataFraud: re-scored within the window; moot: undone or challenged before; missed: the window "
    "closed first) and role (assignee, fallback)", ("network", "validator", "outcome", "role"))
SAMPLING_LATENCY_SECONDS = MetricDef(
    "soma_sampling_latency_seconds", HISTOGRAM,
    "Seconds from a fill's checkpoint (consensus time) to this validator's sampled verdict",
    _VALIDATOR, SECONDS)
SAMPLING_COVERAGE = MetricDef(
    "soma_sampling_coverage", GAUGE,
    "Of the fills assigned to this validator that needed an audit, the share re-scored within "
    "their challenge window (its ledger since the worker's first start)", _VALIDATOR)
# -- the scoring service (serve/scoring.py); `app`: its Serve application's name -------------------
SCORING_SECONDS = MetricDef("soma_scoring_seconds", HISTOGRAM,
                            "Seconds a scoring request took at the ingress, by outcome (ok, error)",
                            ("app", "outcome"), SECONDS)
SCORING_BATCH_SIZE = MetricDef("soma_scoring_batch_size", HISTOGRAM,
                               "Items one score_many call of a model replica scored together",
                               ("app",), BATCH_SIZES)
WEIGHTS_CACHE = MetricDef("soma_weights_cache", COUNTER,
                          "Model lookups in a replica's weights cache, by result (hit, miss)",
                          ("app", "result"))
# -- the gateway (serve/gateway.py) --------------------------------------------------------------
GATEWAY_REQUESTS = MetricDef("soma_gateway_requests", COUNTER,
                             "HTTP requests the gateway answered, by route and status code",
                             ("network", "route", "code"))

# -- the network's held-out loss (soma_ray/heldout.py), measured by the crowd's evaluator ------------
NETWORK_HELD_OUT_BPB = MetricDef(
    "soma_network_held_out_bpb", GAUGE,
    "The network's loss on the held-out corpus no participant reads, in bits per byte, by "
    "definition (best: each item under its best active model; routed: each item under the model "
    "it is routed to by embedding, as targets route data); over time, the network's learning curve",
    ("network", "definition"))
MODEL_HELD_OUT_BPB = MetricDef(
    "soma_model_held_out_bpb", GAUGE,
    "An active model's mean loss on the held-out corpus, in bits per byte (model: its id's first "
    "16 hex digits)", ("network", "model"))

DEFINITIONS = (CHECKPOINTS, FINALIZED_TRANSACTIONS, FINALITY_SECONDS, MEMPOOL_TRANSACTIONS, EPOCH,
               TARGETS, DISTANCE_THRESHOLD, HITS, CHALLENGES, AUDITS, AUDIT_SECONDS,
               SAMPLING_AUDITS, SAMPLING_LATENCY_SECONDS, SAMPLING_COVERAGE,
               SCORING_SECONDS, SCORING_BATCH_SIZE, WEIGHTS_CACHE, GATEWAY_REQUESTS,
               NETWORK_HELD_OUT_BPB, MODEL_HELD_OUT_BPB)


# -- tags -------------------------------------------------------------------------------------------

def network_label(namespace: str, prefix: str) -> str:
    """A network's `network` tag: its name prefix (test networks), else its namespace."""
    return prefix.rstrip("-") or namespace


def network_tags(config: NetworkConfig) -> dict[str, str]:
    return {"network": network_label(config.namespace, config.prefix)}


def validator_tags(config: NetworkConfig, index: int) -> dict[str, str]:
    return {**network_tags(config), "validator": str(index)}


# -- reading them back -------------------------------------------------------------------------------

def scrape(timeout_s: float = 30.0) -> list:
    """Every sample on every live Ray node's metrics export endpoint (Prometheus samples:
    `.name`, `.labels`, `.value`)."""
    samples = []
    for node in ray.nodes():
        if node["Alive"] and node.get("MetricsExportPort"):
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                text = response.read().decode()
            samples += [s for family in text_string_to_metric_families(text) for s in family.samples]
    return samples


def total(samples: list, series: str, **labels: str) -> float:
    """The sum of `series` over the samples carrying `labels` (over the Ray workers that
    recorded it); 0 when none does."""
    return sum(s.value for s in samples
               if s.name == series and all(s.labels.get(k) == v for k, v in labels.items()))


# -- recording helpers --------------------------------------------------------------------------

def record_audit(config: NetworkConfig, validator: int, verdict: str, seconds: float) -> None:
    """One completed audit: its verdict and how long it took."""
    tags = validator_tags(config, validator)
    AUDITS.record(1, {**tags, "verdict": verdict})
    AUDIT_SECONDS.record(seconds, tags)


def record_sampling(config: NetworkConfig, validator: int, outcome: str, role: str,
                    latency_s: float | None, coverage: float | None) -> None:
    """One fill settled by this validator's sampling audit, and its coverage so far."""
    tags = validator_tags(config, validator)
    SAMPLING_AUDITS.record(1, {**tags, "outcome": outcome, "role": role})
    if latency_s is not None:
        SAMPLING_LATENCY_SECONDS.record(latency_s, tags)
    if coverage is not None:
        SAMPLING_COVERAGE.record(coverage, tags)


def record_followed(tags: dict[str, str], counts: list[tuple[str, int]], distance_threshold: int,
                    checkpoint: Checkpoint, effects: list[TransactionEffects]) -> None:
    """What the target index shows after following `checkpoint`: targets per status, the
    threshold (the chain's fixed point), and the checkpoint's hits and challenge events."""
    for status, count in counts:
        TARGETS.record(count, {**tags, "status": status})
    DISTANCE_THRESHOLD.record(distance_threshold / DISTANCE_SCALE, tags)
    events = feed_events(checkpoint, effects)
    HITS.record(events.pop("hit", 0), tags)
    for event, count in events.items():
        CHALLENGES.record(count, {**tags, "event": event})


def record_held_out(tags: dict[str, str], loss) -> None:
    """The network's held-out loss as last measured (a `soma_ray.heldout.NetworkLoss`)."""
    NETWORK_HELD_OUT_BPB.record(loss.best_bpb, {**tags, "definition": "best"})
    NETWORK_HELD_OUT_BPB.record(loss.routed_bpb, {**tags, "definition": "routed"})
    for model in loss.models:
        MODEL_HELD_OUT_BPB.record(model.bpb, {**tags, "model": model.model_id.hex()[:16]})


# -- pure decisions ---------------------------------------------------------------------------------

def feed_events(checkpoint: Checkpoint, effects: list[TransactionEffects]) -> Counter[str]:
    """The hits ("hit") and challenge events ("opened", or the verdict) of a checkpoint: its
    transactions that executed without error."""
    events: Counter[str] = Counter()
    for tx, _ in executed_transactions(checkpoint, effects):
        kind = tx.kind
        if isinstance(kind, RevealSubmission):
            events["hit"] += 1
        elif isinstance(kind, InitiateChallenge):
            events["opened"] += 1
        elif isinstance(kind, ResolveChallenge):
            events[kind.verdict] += 1
    return events
