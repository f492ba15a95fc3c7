"""The one interface between `SomaClient` and a network: `Transport`.

Three implementations carry it: `soma_ray.http_transport.HttpTransport` (participants, over the
gateway's HTTP routes; its methods are made from the route table, soma_ray/routes.py),
`soma_ray.ray_transport.RayTransport` (callers inside the Ray cluster: the gateway itself, the
scripted crowd, the audit workers) and `soma_ray.strategies.simulated.SimTransport` (the game in
one process, over the pure state machine). tests/unit/test_transport_protocol.py fails when one
of them lacks a method or a signature differs.

Every method but `fetch` and `close` is one route of the table, with the same name. Chain reads
answer canonical bytes (decoded by the client); a refusal raises its typed error
(`soma_ray.protocol.errors`).
"""
from __future__ import annotations

from typing import Any, Protocol

from soma_ray.node.replies import SubmitReply, ValidatorStatus
from soma_ray.wire import (
    ChallengePage, ChallengeView, SubmissionPage, SubmissionView, Uploaded, CheckpointReply, EpochInfo, EpochReply, Health, IndexStatus, Leaderboard, ModelManifest,
    ModelView, NearbyTarget, ScoreRequest, ScoreResponse, TargetPage, TargetView, TicketRequest,
    UploadTicket,
)


class Transport(Protocol):
    # ---- transactions: each reply once its transaction is in a certified checkpoint
    async def submit(self, tx: bytes) -> SubmitReply: ...

    async def submit_batch(self, batch: list[bytes]) -> list[SubmitReply]: ...

    async def request_faucet(self, recipient: bytes, amount: int) -> SubmitReply: ...

    # ---- chain state, canonical bytes
    async def get_account(self, address: bytes) -> bytes: ...

    async def get_object(self, key: bytes) -> bytes | None: ...

    async def object_ids(self, tag: bytes, limit: int | None, after: bytes | None) -> list[bytes]:
        """One page of the namespace's ids, ascending: at most `limit` (None: MAX_PAGE), those
        above `after` (None: from the first). A page shorter than asked is the last."""
        ...

    async def system_state(self) -> bytes: ...

    async def epoch_info(self) -> EpochInfo: ...

    async def wait_for_epoch(self, epoch: int, timeout_s: float) -> EpochReply: ...

    async def advance_epoch(self) -> EpochReply: ...

    async def get_checkpoint(self, sequence: int | None) -> CheckpointReply | None: ...

    async def status(self) -> list[ValidatorStatus | None]: ...

    async def health(self) -> Health: ...

    # ---- the target index (min_sequence: answer once it applied that checkpoint)
    async def list_targets(self, status: str | None, limit: int | None, page_token: str | None,
                           submitter: bytes | None, model_id: bytes | None,
                           min_sequence: int | None) -> TargetPage: ...

    async def get_target(self, target_id: bytes, min_sequence: int | None) -> TargetView: ...

    async def nearest_targets(self, embedding: bytes, k: int) -> list[NearbyTarget]: ...

    async def model_manifests(self, model_ids: list[bytes], min_sequence: int | None
                              ) -> list[ModelManifest]: ...

    async def active_models(self, min_sequence: int | None) -> list[ModelView]: ...

    async def get_model(self, model_id: bytes) -> ModelView: ...

    async def leaderboard(self, limit: int | None) -> Leaderboard: ...

    async def index_status(self) -> IndexStatus: ...

    # ---- the submissions and challenges index (the closed ones too)
    async def list_submissions(self, miner: bytes | None, target_id: bytes | None, status: str | None,
                               limit: int | None, page_token: str | None,
                               min_sequence: int | None) -> SubmissionPage: ...

    async def get_submission(self, submission_id: bytes, min_sequence: int | None) -> SubmissionView: ...

    async def list_challenges(self, submission_id: bytes | None, challenger: bytes | None,
                              target_id: bytes | None, status: str | None, limit: int | None,
                              page_token: str | None, min_sequence: int | None) -> ChallengePage: ...

    async def get_challenge(self, challenge_id: bytes, min_sequence: int | None) -> ChallengeView: ...

    # ---- the blob store and the scoring service
    async def upload_ticket(self, request: TicketRequest) -> UploadTicket:
        """A ticket for one upload, for a signed request of a funded account (soma_ray/tickets.py)."""
        ...

    async def upload(self, kind: str, data: bytes, ticket: UploadTicket) -> Uploaded: ...

    async def get_blob(self, checksum: bytes) -> bytes: ...

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        """Score under the on-chain models `request.model_ids` (the service resolves them)."""
        ...

    async def scoring_health(self) -> dict[str, Any]: ...

    # ---- not routes
    async def fetch(self, url: str, max_bytes: int, timeout_s: float) -> bytes:
        """The bytes at a URL the chain names (submission data, weights), at most `max_bytes`,
        within `timeout_s`: FetchError or FetchTooLarge otherwise."""
        ...

    async def close(self) -> None: ...
