"""The target state actor: the read index of finalized targets, models and submissions
(soma_ray/node/target_index.py) kept up to date from the committed-checkpoint feed.

    actor = launch_target_state(config)                   # named <prefix>target-state
    await actor.wait_synced.remote(sequence, 30.0)        # read-your-writes after a commit
    page = await actor.list_targets.remote(status="open", limit=50)

It holds nothing on disk: at start (and after Ray restarts it) it re-executes every certified
checkpoint from 0 on its own genesis state, reading them from the validators' stores through
`CheckpointFeed(config, "target-state", start=0)`, and never acknowledges a cursor, so a restart
always rebuilds from 0 (a cursor it resumed from would point past an index it no longer has).
Queries are answered from what it has applied so far: `synced_sequence()` says how far that is.

A checkpoint that does not re-execute to the state root it names (a genesis other than the
validators', or a bug) stops the follower; `status().error` says why.
"""
from __future__ import annotations

import asyncio
from dataclasses import asdict

import ray

from soma_ray import metrics
from actors.feed import CheckpointFeed
from soma_ray.config import NetworkConfig
from soma_ray.node.target_index import TargetIndex
from soma_ray.wire import (
    ChallengePage, ChallengeView, IndexStatus, Leaderboard, ModelManifest, ModelView, NearbyTarget, SubmissionPage,
    SubmissionView, TargetPage, TargetView,
)

SUBSCRIBER = "target-state"
MAX_WAIT_S = 300.0


class TargetStateActor:
    def __init__(self, config: dict):
        self._network = NetworkConfig(**config)
        self._index = TargetIndex.from_genesis(self._network.genesis_config())
        self._feed = CheckpointFeed(self._network, SUBSCRIBER, start=0)
        self._feed.next_sequence = self._index.next_sequence  # 0, whatever a cursor file says
        self._task: asyncio.Task | None = None
        self._applied = asyncio.Condition()
        self._error: str | None = None
        self._metric_tags = metrics.network_tags(self._network)
        try:  # Ray runs an async actor's __init__ on its event loop: follow from the start
            self._ensure_following()
        except RuntimeError:  # no loop (constructed outside Ray): the first call starts it
            pass

    def _ensure_following(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        try:
            async for followed in self._feed.items():
                self._index.follow(followed.checkpoint, followed.effects)
                metrics.record_followed(self._metric_tags, self._index.status().counts,
                                        self._index.state.system().target_state.distance_threshold,
                                        followed.checkpoint, followed.effects)
                async with self._applied:
                    self._applied.notify_all()
                await asyncio.sleep(0)  # let queries in between checkpoints of a rebuild
        except Exception as error:  # noqa: BLE001 - reported by status(), never hidden
            self._error = f"{type(error).__name__}: {error}"
            async with self._applied:
                self._applied.notify_all()

    # -- progress --------------------------------------------------------------------------------
    async def start(self) -> int | None:
        """Begin following (every other method does too); the last checkpoint applied so far."""
        self._ensure_following()
        return self._index.synced_sequence

    async def synced_sequence(self) -> int | None:
        """The last checkpoint applied (None: only genesis so far)."""
        self._ensure_following()
        return self._index.synced_sequence

    async def wait_synced(self, sequence: int, timeout_s: float = 30.0) -> int | None:
        """Wait until checkpoint `sequence` is applied (at most `timeout_s`, capped at
        MAX_WAIT_S); returns the last checkpoint applied, which is below `sequence` on timeout
        or when the follower stopped (see status())."""
        self._ensure_following()

        def reached() -> bool:
            synced = self._index.synced_sequence
            return self._error is not None or (synced is not None and synced >= sequence)

        try:
            async with self._applied:
                await asyncio.wait_for(self._applied.wait_for(reached), min(timeout_s, MAX_WAIT_S))
        except asyncio.TimeoutError:
            pass
        return self._index.synced_sequence

    async def status(self) -> IndexStatus:
        self._ensure_following()
        status = self._index.status()
        status.error = self._error
        return status

    # -- queries (soma_ray/node/target_index.py documents them) ------------------------------------
    async def list_targets(self, status: str | None = None, limit: int = 50, page_token: str | None = None,
                           submitter: bytes | None = None, model_id: bytes | None = None) -> TargetPage:
        self._ensure_following()
        return self._index.list_targets(status, limit, page_token, submitter, model_id)

    async def get_target(self, target_id: bytes) -> TargetView:
        self._ensure_following()
        return self._index.get_target(target_id)

    async def required_bond(self, data_size: int) -> int:
        self._ensure_following()
        return self._index.required_bond(data_size)

    async def nearest_open_targets(self, embedding: bytes, k: int = 10) -> list[NearbyTarget]:
        self._ensure_following()
        return self._index.nearest_open_targets(embedding, k)

    async def model_manifests(self, model_ids: list[bytes]) -> list[ModelManifest]:
        self._ensure_following()
        return self._index.model_manifests(model_ids)

    async def active_models(self) -> list[ModelView]:
        self._ensure_following()
        return self._index.active_models()

    async def get_model(self, model_id: bytes) -> ModelView:
        self._ensure_following()
        return self._index.get_model(model_id)

    async def leaderboard(self, limit: int = 100) -> Leaderboard:
        self._ensure_following()
        return self._index.leaderboard(limit)

    async def list_submissions(self, miner: bytes | None = None, target_id: bytes | None = None,
                               status: str | None = None, limit: int = 50,
                               page_token: str | None = None) -> SubmissionPage:
        self._ensure_following()
        return self._index.list_submissions(miner, target_id, status, limit, page_token)

    async def get_submission(self, submission_id: bytes) -> SubmissionView:
        self._ensure_following()
        return self._index.get_submission(submission_id)

    async def list_challenges(self, submission_id: bytes | None = None, challenger: bytes | None = None,
                              target_id: bytes | None = None, status: str | None = None, limit: int = 50,
                              page_token: str | None = None) -> ChallengePage:
        self._ensure_following()
        return self._index.list_challenges(submission_id, challenger, target_id, status, limit, page_token)

    async def get_challenge(self, challenge_id: bytes) -> ChallengeView:
        self._ensure_following()
        return self._index.get_challenge(challenge_id)


def launch_target_state(config: NetworkConfig, detached: bool = False):
    """Start the network's target state actor (or return it if it runs); it follows from its
    start. Ray restarts it when its process dies; it then rebuilds from checkpoint 0."""
    options = dict(name=config.target_state_name, namespace=config.namespace, max_restarts=-1,
                   max_task_retries=3, get_if_exists=True, **config.actor_resources("target_state"))
    if detached:
        options["lifetime"] = "detached"
    return ray.remote(TargetStateActor).options(**options).remote(asdict(config))
