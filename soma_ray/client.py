"""SomaClient: the async SDK that users, scripts and miners use to talk to a network.

    client = await SomaClient(chain="localnet")              # the local gateway over HTTP
    client = await SomaClient("http://host:8000")             # any network's gateway
    client = await SomaClient(chain="testnet")                # a name `soma network add` gave
    await client.request_faucet(address, 10 * SHANNONS_PER_SOMA)
    effects = await client.transfer(keypair, recipient, amount)
    await client.close()                                      # or: async with SomaClient(...) as client

Amounts here are shannons and ids bytes (the library's units); `soma_sdk.SomaClient` is this
client with the reference SDK's units (SOMA, 0x-hex ids: docs/gateway.md). A client whose script
forgets `close()` releases its HTTP session when it is collected or the interpreter exits, with
no "Unclosed client session" warning.

Participants reach the network over the gateway's HTTP routes (`soma_ray.http_transport`): this
module imports no Ray. Callers inside the cluster (tests, scripted participants) may take the
Ray path instead, with `namespace=` (and `prefix=`, `address=`): the same methods over
`soma_ray.ray_transport`. Reads stay on one validator while it answers, so they see the client's
own transactions; `execute` signs a transaction, submits it and returns its certified effects (concurrent calls
for one key are safe: see its docstring). A transaction that fails raises the typed error of
spec §8 (a `soma_ray.protocol.errors.ProtocolError` subclass with its fields), whether admission
refused it (the node-local `MempoolFull`, `SenderPoolFull`, `NonceTooFarAhead` too), a
validator dropped it unexecuted after its mempool time limit (`TransactionExpired`), or
execution failed after ordering (the fee is then still charged, as the spec says).
"""
from __future__ import annotations

import asyncio
import weakref

from soma_ray import chains, s3
from soma_ray.http_transport import HttpTransport
from soma_ray.node.replies import SubmitReply, ValidatorStatus
from soma_ray.participant import ParticipantCalls, as_id, as_embedding_bytes
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import blake2b256, decode, encode
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.state import MODEL, SUBMISSION, TARGET
from soma_ray.protocol.types import (
    Account, Checkpoint, Model, Submission, SystemState, Target, Transaction, TransactionEffects,
    TransactionKind, Transfer,
)
from soma_ray import tickets
from soma_ray.transport import Transport
from soma_ray.wire import (
    ChallengePage, ChallengeView, SubmissionPage, SubmissionView,
    MAX_PAGE, EpochInfo, Leaderboard, ModelManifest, ModelView, NearbyTarget, ScoreRequest,
    ScoreResponse, TargetPage, TargetView,
)

DEFAULT_FINALITY_TIMEOUT_S = 60.0
# How long a blob download may take.
DOWNLOAD_TIMEOUT_S = 600.0
# The gateway a built-in chain name stands for (soma_ray/chains.py: and the user's names).
CHAIN_URLS = {name: chain.rpc_url for name, chain in chains.BUILTIN.items()}
# What `request_faucet` asks for when no amount is given: the reference SDK's 2 SOMA.
DEFAULT_FAUCET_SHANNONS = 2 * SHANNONS_PER_SOMA
# The longest one gateway wait for an epoch may be (wire.MAX_WAIT_S); longer waits take steps.
EPOCH_WAIT_STEP_S = 300.0
# Execution failures raised before the sender's nonce increments (spec §2): the nonce stays free.
NONCE_UNUSED = frozenset({errors.BadNonce.__name__, errors.InsufficientFee.__name__})
# Refused because another transaction of the key with that nonce is pooled: the nonce is not free.
NONCE_POOLED = errors.NonceAlreadyPooled.__name__
# Submissions made during one turn of the event loop travel in `submit_batch` calls of at most
# this many transactions (each call answers once all of its transactions are final).
SUBMIT_BATCH = 100


class FinalityTimeout(TimeoutError):
    """The transaction was admitted but not seen in a certified checkpoint in time; it may
    still commit later (resubmitting the same bytes is safe: the nonce prevents a replay)."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        super().__init__(f"the transaction was not finalized within {timeout_s} s")


async def _finality(awaitable, timeout_s: float):
    """The result of `awaitable`, or FinalityTimeout when it takes longer than `timeout_s`."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError:
        raise FinalityTimeout(timeout_s) from None


def raise_error(code: str, fields) -> None:
    """Raise the typed protocol error named `code` with its fields (`UnknownProtocolError` for a
    code or field set this client does not know, e.g. from a newer validator)."""
    raise errors.error_from_struct(errors.ExecutionError(code=code, fields=sorted(dict(fields).items())))


class _KeyNonces:
    """The nonces `SomaClient.execute` hands out for one key (the rule is in its docstring)."""

    def __init__(self):
        self.lock = asyncio.Lock()
        self.committed = 0  # one past the highest nonce this client saw used
        self.next = 0  # one past the highest handed out
        self.handed_back: set[int] = set()  # below `next`, unused: taken again first
        self.in_flight = 0

    def restart(self, account_nonce: int) -> None:
        """Nothing is in flight: go on from the account (or past what this client saw used, when
        the replica read lags), forgetting every nonce whose fate this client did not learn."""
        self.next = max(account_nonce, self.committed)
        self.handed_back.clear()

    def take(self) -> int:
        if self.handed_back:
            nonce = min(self.handed_back)
            self.handed_back.discard(nonce)
        else:
            nonce, self.next = self.next, self.next + 1
        self.in_flight += 1
        return nonce

    def settle(self, nonce: int, reply: SubmitReply) -> None:
        """Record what a validator answered for `nonce`: used, or free for the next call."""
        failure = reply.failure()
        if failure is not None and failure.code == NONCE_POOLED:
            return  # another transaction with this nonce is pooled: its fate decides, keep it
        if failure is None or (reply.error is None and failure.code not in NONCE_UNUSED):
            self.committed = max(self.committed, nonce + 1)
            return
        self.handed_back.add(nonce)  # refused at admission, or failed before the nonce was used
        if failure.code == errors.BadNonce.__name__:  # the account is at `expected`: all below are used
            self._used_below(dict(failure.fields)["expected"])

    def _used_below(self, account_nonce: int) -> None:
        self.committed = max(self.committed, account_nonce)
        self.next = max(self.next, account_nonce)
        self.handed_back = {n for n in self.handed_back if n >= account_nonce}


class SomaClient(ParticipantCalls):
    """Async client of one network. `await SomaClient(...)` connects.

    `SomaClient(rpc_url=None, *, chain=None, scoring_url=None)` as the reference SDK: a gateway
    URL, or a chain name (built in: "localnet"; others named with `soma network add`,
    soma_ray/chains.py); both is a ValueError, neither is the localnet. `scoring_url`: a scoring
    service of one's own (`soma start scoring`) for `score` and `scoring_health` (a named
    chain's own scoring_url otherwise). `admin_url` and `faucet_url` are accepted for the
    reference's signature: the gateway serves both (they are not used).

    Inside a Ray cluster, `namespace=` (and `prefix=`, `address=`) takes the Ray path instead;
    `transport=` any Transport."""

    def __init__(self, rpc_url: str | None = None, *, chain: str | None = None,
                 scoring_url: str | None = None, admin_url: str | None = None,
                 faucet_url: str | None = None, address: str | None = None,
                 namespace: str | None = None, prefix: str = "", transport: Transport | None = None):
        if namespace is None and transport is None:
            self.rpc_url, self.scoring_url = chains.endpoints(rpc_url, chain, scoring_url)
        else:
            self.rpc_url, self.scoring_url = None, scoring_url
        self.chain_name = chain
        self._ray_path = (namespace, prefix, address)
        self._transport: Transport | None = transport
        self._seen_sequence: int | None = None  # the latest checkpoint holding one of ours
        self._catch_up_reads = False
        self._nonces: dict[bytes, _KeyNonces] = {}  # by sender, for `execute`
        self._queued: list[tuple[bytes, asyncio.Future]] = []  # submissions not yet sent
        self._sending: set[asyncio.Task] = set()
        self._chain_id: bytes | None = None  # the network's identity, read once
        self._finalizer: weakref.finalize | None = None

    def __await__(self):
        return self._connect().__await__()

    async def __aenter__(self) -> "SomaClient":
        return await self._connect()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _connect(self) -> "SomaClient":
        if self._transport is not None:
            return self
        if self.rpc_url is not None:
            self._transport = HttpTransport(self.rpc_url, scoring_url=self.scoring_url)
        else:  # inside the cluster: Ray is imported only here
            from soma_ray.ray_transport import RayTransport

            self._transport = RayTransport.connect(*self._ray_path)
        # A script that never closes the client: its HTTP sessions are released when the client
        # is collected (or at exit), without aiohttp's "Unclosed client session" warnings.
        self._finalizer = weakref.finalize(self, _release_sessions, self._transport)
        return self

    async def close(self) -> None:
        """Release the transport's HTTP sessions (idempotent)."""
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._transport is not None:
            await self._transport.close()

    @property
    def network(self):
        """The network's actor handles, on the Ray path (tests take validators out of it)."""
        return getattr(self._transport, "network", None)

    # ------------------------------------------------------------------ reads

    async def get_account(self, address: bytes) -> Account:
        return decode(await self._transport.get_account(address), Account)

    async def get_balance(self, address: str | bytes) -> int:
        """The balance in shannons (`soma_sdk`'s answers in SOMA)."""
        return await self.balance_shannons(address)

    async def balance_shannons(self, address: str | bytes) -> int:
        """The balance in shannons, whatever a subclass makes of `get_balance`: what the
        library's own checks call."""
        return (await self.get_account(as_id(address, "an address"))).balance

    async def get_system_state(self) -> SystemState:
        system = decode(await self._transport.system_state(), SystemState)
        self._chain_id = system.chain_id
        return system

    async def chain_id(self) -> bytes:
        """The network's identity (its `SystemState.chain_id`, the digest of its genesis): what
        every signature for it is made under. Read from the gateway once, then cached."""
        if self._chain_id is None:
            await self.get_system_state()
        return self._chain_id

    async def get_epoch(self) -> EpochInfo:
        """The current epoch, when it started and when the next one is due (consensus ms)."""
        return await self._transport.epoch_info()

    async def get_next_epoch_timestamp(self) -> int:
        """When the next epoch is due (unix ms, consensus time)."""
        return (await self._transport.epoch_info()).next_epoch_ms

    async def get_following_epoch_timestamp(self) -> int:
        """When the epoch after the next one is due (unix ms): one epoch duration later."""
        info = await self._transport.epoch_info()
        return info.next_epoch_ms + info.epoch_duration_ms

    async def get_checkpoint(self, sequence: int | None = None) -> Checkpoint | None:
        """A certified checkpoint (the latest when `sequence` is None)."""
        found = await self._transport.get_checkpoint(sequence)
        return None if found is None else decode(found.checkpoint, Checkpoint)

    def read_from_latest(self) -> None:
        """Target-index reads wait until the index has applied the chain's latest certified
        checkpoint as of the first such read, so they show what other processes wrote before
        (a fresh client otherwise reads its own writes only). Costs one request, then."""
        self._catch_up_reads = True

    async def _reads_after(self) -> int | None:
        """The checkpoint an index read must wait for (see read_from_latest)."""
        if self._catch_up_reads:
            self._catch_up_reads = False
            latest = await self.get_checkpoint()
            if latest is not None:
                self._seen_sequence = max(latest.sequence, self._seen_sequence or 0)
        return self._seen_sequence

    async def get_object(self, tag: bytes, ident: bytes, type_):
        """The state object `type_` stored under `tag || ident` (see protocol.state), or None."""
        raw = await self._transport.get_object(tag + ident)
        return None if raw is None else decode(raw, type_)

    async def get_object_ids(self, tag: bytes) -> list[bytes]:
        """Ids of every object of one kind (`protocol.state` tags: TARGET, MODEL, ...), over as
        many pages of the gateway's `/ids/{tag}` as it takes."""
        ids: list[bytes] = []
        while True:
            page = await self._transport.object_ids(tag, MAX_PAGE, ids[-1] if ids else None)
            ids += page
            if len(page) < MAX_PAGE:
                return ids

    async def status(self) -> list[ValidatorStatus | None]:
        """Each validator's status, None for one that does not answer."""
        return await self._transport.status()

    # ------------------------------------------------------------------ the target index
    # Every read waits until the index has applied the latest checkpoint this client saw one of
    # its own transactions in, so it reflects them.

    async def list_targets(self, status: str | None = "open", limit: int | None = None,
                           submitter: str | bytes | None = None, model_id: str | bytes | None = None,
                           page_token: str | None = None) -> TargetPage:
        """One page of targets (statuses open, filled, claimable, expired, settled; None: all),
        in creation order; pass `next_page_token` back for the next."""
        return await self._transport.list_targets(
            status, limit, page_token, None if submitter is None else as_id(submitter, "an address"),
            None if model_id is None else as_id(model_id, "a model id"), await self._reads_after())

    async def get_targets(self, status: str | None = "open", limit: int | None = None,
                          submitter: str | bytes | None = None,
                          model_id: str | bytes | None = None) -> list[TargetView]:
        """Every target matching (at most `limit`), over as many pages as it takes."""
        found: list[TargetView] = []
        token = None
        while limit is None or len(found) < limit:
            page = await SomaClient.list_targets(self, status, None if limit is None else min(limit - len(found), MAX_PAGE),
                                           submitter, model_id, token)
            found += page.targets
            token = page.next_page_token
            if token is None:
                break
        return found

    async def get_target(self, target_id: str | bytes) -> TargetView:
        return await self._transport.get_target(as_id(target_id, "a target id"), await self._reads_after())

    async def get_model_manifests(self, target_or_model_ids) -> list[ModelManifest]:
        """One manifest per model, in the target's order (a TargetView, or model ids); a model
        without weights raises ModelHasNoWeights, it is never left out."""
        return await self._model_manifests(target_or_model_ids)

    async def _model_manifests(self, target_or_model_ids) -> list[ModelManifest]:
        """`get_model_manifests` as the library's own code calls it (wire views, bytes ids),
        whatever a subclass makes of the public method."""
        ids = getattr(target_or_model_ids, "model_ids", target_or_model_ids)
        return await self._transport.model_manifests([as_id(i, "a model id") for i in ids], await self._reads_after())

    async def nearest_targets(self, embedding, k: int = 10) -> list[NearbyTarget]:
        """The open targets closest to `embedding` (cosine distance), nearest first."""
        return await self._transport.nearest_targets(as_embedding_bytes(embedding), k)

    async def get_active_models(self) -> list[ModelView]:
        """Every Active model: id, owner, embedding (float32 bytes), stake, commission, whether
        an update is pending."""
        return await self._transport.active_models(await self._reads_after())

    async def get_model(self, model_id: str | bytes) -> ModelView:
        """Any model of the chain as the index shows it (status, owner, stake, commission)."""
        return await self._transport.get_model(as_id(model_id, "a model id"))

    async def get_leaderboard(self, limit: int = 100) -> Leaderboard:
        return await self._transport.leaderboard(limit)

    # ------------------------------------------------------------------ submissions and challenges
    # The index keeps every submission and challenge the chain held, the closed ones too.

    async def list_submissions(self, miner: str | bytes | None = None, target_id: str | bytes | None = None,
                               status: str | None = None, limit: int | None = None,
                               page_token: str | None = None) -> SubmissionPage:
        """One page of submissions (by miner, target, status: wire.SUBMISSION_STATUSES)."""
        return await self._transport.list_submissions(
            _optional_id(miner, "a miner"), _optional_id(target_id, "a target id"), status, limit, page_token,
            await self._reads_after())

    async def get_submissions(self, miner: str | bytes | None = None, target_id: str | bytes | None = None,
                              status: str | None = None, limit: int | None = None) -> list[SubmissionView]:
        """Every submission matching (at most `limit`), over as many pages as it takes."""
        return await _all_pages(lambda size, token: SomaClient.list_submissions(
            self, miner, target_id, status, size, token), "submissions", limit)

    async def get_submission(self, submission_id: str | bytes) -> SubmissionView:
        """A submission as the index knows it (ObjectNotFound: never seen, or forgotten)."""
        return await self._transport.get_submission(as_id(submission_id, "a submission id"),
                                                    await self._reads_after())

    async def list_challenges(self, submission_id: str | bytes | None = None, challenger: str | bytes | None = None,
                              target_id: str | bytes | None = None, status: str | None = None,
                              limit: int | None = None, page_token: str | None = None) -> ChallengePage:
        """One page of challenges, the resolved and closed ones too (statuses:
        wire.CHALLENGE_STATUSES); `get_challenges` reads the chain's open ones."""
        return await self._transport.list_challenges(
            _optional_id(submission_id, "a submission id"), _optional_id(challenger, "a challenger"),
            _optional_id(target_id, "a target id"), status, limit, page_token, await self._reads_after())

    async def challenge_history(self, submission_id: str | bytes | None = None, challenger: str | bytes | None = None,
                                target_id: str | bytes | None = None, status: str | None = None,
                                limit: int | None = None) -> list[ChallengeView]:
        """Every challenge matching (at most `limit`), open or not, over as many pages as it takes."""
        return await _all_pages(lambda size, token: SomaClient.list_challenges(
            self, submission_id, challenger, target_id, status, size, token), "challenges", limit)

    async def challenge_record(self, challenge_id: str | bytes) -> ChallengeView:
        """A challenge as the index knows it, open or not (ObjectNotFound: never seen)."""
        return await self._transport.get_challenge(as_id(challenge_id, "a challenge id"),
                                                   await self._reads_after())

    # ------------------------------------------------------------------ scoring

    async def score(self, data_url: str | None, manifests, target_embedding, data: bytes | None = None,
                    seed: int = 0, *, data_size: int | None = None) -> ScoreResponse:
        """Score data (given, or downloaded by the service from `data_url`) under every model of
        `manifests` (`get_model_manifests`' views, or model ids), as the chain's scoring
        function does: {winner (index into manifests), loss_score, embedding, distance, losses}.
        The request names the models by id: the service reads their weights from the chain.
        The embedding may be any float sequence (converted to float32); `data_size`, with a
        `data_url`, is checked before and against the download."""
        return await self._score_request(data_url, manifests, target_embedding, data, seed, data_size=data_size)

    async def _score_request(self, data_url: str | None, manifests, target_embedding, data: bytes | None = None,
                             seed: int = 0, *, data_size: int | None = None) -> ScoreResponse:
        """`score` as the library's own code calls it (a ScoreResponse), whatever a subclass
        makes of the public method."""
        model_ids = [as_id(getattr(m, "model_id", m), "a model id") for m in manifests]
        request = ScoreRequest(model_ids=model_ids, target_embedding=as_embedding_bytes(target_embedding),
                               data=None if data is None else bytes(data),
                               data_url=None if data is not None else data_url,
                               data_size=None if data is not None else data_size, seed=seed)
        return await self._transport.score(request)

    async def scoring_health(self) -> bool:
        """Whether the scoring service answers and is up (False when it cannot be reached or
        says it is not: never raises for that). `scoring_stats` has its figures."""
        try:
            stats = await self._transport.scoring_health()
        except Exception:  # noqa: BLE001 - unreachable, refused, failing: not healthy
            return False
        return bool(stats) and stats.get("ok", True) is not False and stats.get("replicas", 1) != 0

    async def scoring_stats(self) -> dict:
        """The scoring service's device, replicas, cache and batch figures (raises when it
        cannot be reached)."""
        return await self._transport.scoring_health()

    # ------------------------------------------------------------------ blobs and weights

    async def upload(self, data: bytes, kind: str = "data", *, signer: Keypair | None = None) -> str:
        """Put `data` (a submission's data, or with kind="weights" encrypted weights) where the
        network can download it; returns its URL.

        When the guide's S3_BUCKET, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_ENDPOINT_URL and
        S3_PUBLIC_URL are set, into that S3-compatible bucket (soma_ray/s3.py: key = the
        checksum's hex, URL = S3_PUBLIC_URL/<key>); `signer` is then not needed. Otherwise into
        the network's blob store, as the account of `signer` (its name is the chain's checksum
        of it).

        The store takes uploads from funded accounts only, within a quota per account
        (docs/blobs.md): this signs a request for an upload ticket with `signer`'s key, gets the
        ticket and uploads with it. AccountUnderfunded when the account holds too little (for
        data, what submitting it would cost), UploadQuotaExceeded or RateLimited when it
        uploaded too much lately."""
        data = bytes(data)
        bucket = s3.from_environment()
        if bucket is not None:
            return await bucket.upload(data, kind)
        if not isinstance(signer, Keypair):
            raise TypeError("upload(data, kind, signer=keypair): uploads are signed by a funded account "
                            "(or set the S3_* variables to upload to your own bucket)")
        ticket = await self._transport.upload_ticket(tickets.sign_request(signer, kind, len(data),
                                                                          await self.chain_id()))
        return (await self._transport.upload(kind, data, ticket)).url

    async def download(self, url: str, size: int, checksum: bytes, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> bytes:
        """The bytes at `url`, which must be `size` long with BLAKE2b-256 `checksum` (FetchError)."""
        data = await self._transport.fetch(url, size, timeout_s)
        if len(data) != size or blake2b256(data) != bytes(checksum):
            raise errors.FetchError(url=url, reason=f"not the {size} bytes the chain names (size or checksum differs)")
        return data

    @staticmethod
    def encrypt_weights(data: bytes) -> tuple[bytes, bytes]:
        """(encrypted weights, the 32-byte key) of a weights file's bytes."""
        from soma_ray.model.encryption import encrypt_bytes

        return encrypt_bytes(data)

    @staticmethod
    def decrypt_weights(data: bytes, key: bytes) -> bytes:
        from soma_ray.model.encryption import decrypt_bytes

        return decrypt_bytes(data, key)

    async def fetch_model(self, model_id: str | bytes) -> bytes:
        """A revealed model's weights file, downloaded from its manifest, checked and decrypted."""
        model_id = as_id(model_id, "a model id")
        model = await self.get_object(MODEL, model_id, Model)
        if model is None:
            raise errors.ObjectNotFound(kind="model", id=model_id)
        if model.weights_manifest is None or not model.decryption_key:
            raise errors.ModelHasNoWeights(model_id=model_id)
        manifest = model.weights_manifest
        encrypted = await self.download(manifest.url, manifest.size, manifest.checksum)
        return self.decrypt_weights(encrypted, model.decryption_key)

    async def fetch_submission_data(self, target_id: str | bytes, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> bytes:
        """The data a filled target's submission revealed, downloaded (within `timeout_s`) and
        checked against its hash and size."""
        target_id = as_id(target_id, "a target id")
        target = await self.get_object(TARGET, target_id, Target)
        if target is None:
            raise errors.ObjectNotFound(kind="target", id=target_id)
        submission = None if target.submission_id is None else (
            await self.get_object(SUBMISSION, target.submission_id, Submission))
        if submission is None or submission.revealed is None:
            raise errors.NoRevealedSubmission(target_id=bytes(target_id))
        revealed = submission.revealed
        return await self.download(revealed.data_url, revealed.data_size, revealed.data_hash, timeout_s)

    # ------------------------------------------------------------------ epochs

    async def advance_epoch(self) -> int:
        """Localnet: end the epoch now; returns the new epoch once committed."""
        return (await self._transport.advance_epoch()).epoch

    async def wait_for_epoch(self, epoch: int, timeout_s: float = 120.0) -> int:
        """Wait until `epoch` has begun (at most `timeout_s`, in gateway waits of at most
        EPOCH_WAIT_STEP_S each); returns the epoch then current, or raises EpochNotReached."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            left = max(0.0, deadline - loop.time())
            try:
                return (await self._transport.wait_for_epoch(epoch, min(left, EPOCH_WAIT_STEP_S))).epoch
            except errors.EpochNotReached:
                if loop.time() >= deadline or left <= EPOCH_WAIT_STEP_S:
                    raise

    async def wait_for_next_epoch(self, timeout: float = 120.0) -> int:
        """The reference SDK's: wait until the epoch after the current one begins (at most
        `timeout` seconds); returns it, or raises EpochNotReached."""
        return await SomaClient.wait_for_epoch(self, (await self._transport.epoch_info()).epoch + 1, timeout)

    # ------------------------------------------------------------------ transactions

    async def execute(self, keypair: Keypair, kind: TransactionKind,
                      max_fee: int | None = None) -> TransactionEffects:
        """Sign `kind` from `keypair` with its next nonce, submit, return the certified effects.

        Concurrent calls for one key in one client are safe: they take consecutive nonces (one
        at a time, under a lock per key) and are submitted together; a validator orders each
        key's transactions by nonce, so all of them commit. The nonces are this client's:
        - with none of the key's calls in flight, the next nonce is the account's (or one past
          the last this client saw used, if the replica read lags behind);
        - a call that fails without using its nonce (refused at admission, e.g. `MempoolFull`
          or `TransactionTooLarge`, or `BadNonce`/`InsufficientFee` at execution) hands the nonce
          back and the key's next call takes it first: calls with later nonces, which wait for it
          in the mempool, then go through. Until that next call they wait, and end in
          `FinalityTimeout` if it does not come in time (they can still commit after that); those
          ordered right behind it in the same checkpoint fail with `BadNonce` and hand theirs
          back too;
        - a call whose outcome is unknown (`FinalityTimeout`, no validator answered) keeps its
          nonce until no call of the key is in flight, then the account decides.
        Other clients or `submit` using the same key at the same time can take the same nonces
        (one of two such transactions fails with `BadNonce`)."""
        if max_fee is None:
            max_fee = (await self.get_system_state()).parameters.base_fee
        nonces = self._nonces.setdefault(keypair.address, _KeyNonces())
        async with nonces.lock:
            # Read under the lock (once per client): concurrent first calls of a key would
            # otherwise take their nonces in the order their reads return, not in call order.
            chain_id = await self.chain_id()
            if not nonces.in_flight:  # else this client's own calls are ahead of any replica
                nonces.restart((await self.get_account(keypair.address)).nonce)
            nonce = nonces.take()
        try:
            tx = Transaction(sender=keypair.address, nonce=nonce, kind=kind, max_fee=max_fee)
            result = await self._submit(encode(sign_transaction(keypair, tx, chain_id)), DEFAULT_FINALITY_TIMEOUT_S)
            nonces.settle(nonce, result)
        finally:
            nonces.in_flight -= 1
        return self._effects_of(result)

    async def submit(self, signed_transaction: bytes, timeout_s: float = DEFAULT_FINALITY_TIMEOUT_S
                     ) -> TransactionEffects:
        """Submit already signed canonical bytes; raises the typed error if it fails, and
        `FinalityTimeout` if no certified checkpoint holds it within `timeout_s`."""
        return self._effects_of(await self._submit(signed_transaction, timeout_s))

    async def _submit(self, signed_transaction: bytes, timeout_s: float) -> SubmitReply:
        """Queue the transaction for the next batch and wait for its result."""
        loop = asyncio.get_running_loop()
        result = loop.create_future()
        self._queued.append((signed_transaction, result))
        if len(self._queued) == 1:
            loop.call_soon(self._send_queued)
        return await _finality(result, timeout_s)

    def _send_queued(self) -> None:
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), SUBMIT_BATCH):
            task = asyncio.get_running_loop().create_task(
                self._submit_batch(queued[start:start + SUBMIT_BATCH]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _submit_batch(self, queued: list[tuple[bytes, asyncio.Future]]) -> None:
        try:
            results = await self._transport.submit_batch([data for data, _ in queued])
        except Exception as error:  # every waiting submitter sees the failure
            for _, future in queued:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException:
            for _, future in queued:
                future.cancel()
            raise
        self._saw(results)
        for (_, future), result in zip(queued, results):
            if not future.done():  # a submitter that timed out cancelled its future
                future.set_result(result)

    def _saw(self, replies: list[SubmitReply]) -> None:
        sequences = [r.sequence for r in replies if r.sequence is not None]
        if sequences:
            self._seen_sequence = max(sequences + [self._seen_sequence or 0])

    async def transfer(self, keypair: Keypair, recipient: str | bytes, amount: int) -> TransactionEffects:
        return await self.execute(keypair, Transfer(recipient=as_id(recipient, "a recipient"), amount=amount))

    async def request_faucet(self, recipient: str | bytes, amount: int | None = None,
                             timeout_s: float = DEFAULT_FINALITY_TIMEOUT_S) -> TransactionEffects:
        """Coins from the emission pool (a localnet, or a testnet whose genesis turns the faucet
        on), signed by a validator's faucet key: `amount` shannons (default
        DEFAULT_FAUCET_SHANNONS, the reference's 2 SOMA); raises `FinalityTimeout` if no
        certified checkpoint holds them within `timeout_s` (they may still arrive later)."""
        recipient = as_id(recipient, "a recipient")
        amount = DEFAULT_FAUCET_SHANNONS if amount is None else amount
        reply = await _finality(self._transport.request_faucet(recipient, amount), timeout_s)
        self._saw([reply])
        return self._effects_of(reply)

    @staticmethod
    def _effects_of(reply: SubmitReply) -> TransactionEffects:
        failure = reply.failure()
        if failure is not None:
            raise_error(failure.code, failure.fields)
        return reply.effects


def _optional_id(value, what: str) -> bytes | None:
    return None if value is None else as_id(value, what)


async def _all_pages(page_of, field: str, limit: int | None) -> list:
    """Every item of `page_of(size, token)`'s pages (`field` holds them), at most `limit`."""
    found: list = []
    token = None
    while limit is None or len(found) < limit:
        page = await page_of(None if limit is None else min(limit - len(found), MAX_PAGE), token)
        found += getattr(page, field)
        token = page.next_page_token
        if token is None:
            break
    return found


def _release_sessions(transport) -> None:
    """Close the aiohttp sessions `transport` holds, synchronously (a finalizer may run with no
    event loop): their connections are closed and the sessions marked closed, so neither warns
    when collected. The HttpTransport's own, and the one a RayTransport keeps for the services."""
    for http in (transport, getattr(transport, "_services", None)):
        session = getattr(http, "_session", None)
        if session is None or session.closed:
            continue
        try:
            connector = session.connector
            if connector is not None and not connector.closed:
                connector._close()  # the synchronous part of BaseConnector.close
        except Exception:  # noqa: BLE001 - a finalizer must not raise
            pass
        session._connector = None  # what ClientSession.close leaves: `closed` is then True
