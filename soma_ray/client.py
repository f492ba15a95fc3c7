"""SomaClient: the async SDK that users, scripts and miners use to talk to a network.

    client = await SomaClient(chain="localnet")              # the local gateway over HTTP
    client = await SomaClient(rpc_url="http://host:8000")     # any network's gateway
    await client.request_faucet(address, 10 * SHANNONS_PER_SOMA)
    effects = await client.transfer(keypair, recipient, amount)

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

from soma_ray.http_transport import HttpTransport
from soma_ray.node.replies import SubmitReply, ValidatorStatus
from soma_ray.participant import ParticipantCalls, as_id
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import blake2b256, decode, encode
from soma_ray.protocol.execution import sign_transaction
from soma_ray.protocol.state import MODEL, SUBMISSION, TARGET
from soma_ray.protocol.targets import embedding_bytes
from soma_ray.protocol.types import (
    Account, Checkpoint, Model, Submission, SystemState, Target, Transaction, TransactionEffects,
    TransactionKind, Transfer,
)
from soma_ray.transport import Transport
from soma_ray.wire import (
    MAX_PAGE, EpochInfo, Leaderboard, ModelManifest, ModelView, NearbyTarget, ScoreRequest,
    ScoreResponse, TargetPage, TargetView,
)

DEFAULT_FINALITY_TIMEOUT_S = 60.0
# How long a blob download may take.
DOWNLOAD_TIMEOUT_S = 600.0
# The gateway a chain name stands for.
CHAIN_URLS = {"localnet": "http://127.0.0.1:8000"}
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
    """Async client of one network. `await SomaClient(...)` connects."""

    def __init__(self, chain: str = "localnet", rpc_url: str | None = None,
                 address: str | None = None, namespace: str | None = None, prefix: str = "",
                 transport: Transport | None = None):
        if rpc_url is None and namespace is None and transport is None and chain not in CHAIN_URLS:
            raise ValueError(f"unknown chain {chain!r}: known are {', '.join(CHAIN_URLS)}")
        self.rpc_url = rpc_url or (None if namespace or transport else CHAIN_URLS[chain])
        self._ray_path = (namespace, prefix, address)
        self._transport: Transport | None = transport
        self._seen_sequence: int | None = None  # the latest checkpoint holding one of ours
        self._catch_up_reads = False
        self._nonces: dict[bytes, _KeyNonces] = {}  # by sender, for `execute`
        self._queued: list[tuple[bytes, asyncio.Future]] = []  # submissions not yet sent
        self._sending: set[asyncio.Task] = set()

    def __await__(self):
        return self._connect().__await__()

    async def _connect(self) -> "SomaClient":
        if self._transport is not None:
            return self
        if self.rpc_url is not None:
            self._transport = HttpTransport(self.rpc_url)
        else:  # inside the cluster: Ray is imported only here
            from soma_ray.ray_transport import RayTransport

            self._transport = RayTransport.connect(*self._ray_path)
        return self

    async def close(self) -> None:
        """Release the transport's HTTP sessions."""
        await self._transport.close()

    @property
    def network(self):
        """The network's actor handles, on the Ray path (tests take validators out of it)."""
        return getattr(self._transport, "network", None)

    # ------------------------------------------------------------------ reads

    async def get_account(self, address: bytes) -> Account:
        return decode(await self._transport.get_account(address), Account)

    async def get_balance(self, address: bytes) -> int:
        return (await self.get_account(address)).balance

    async def get_system_state(self) -> SystemState:
        return decode(await self._transport.system_state(), SystemState)

    async def get_epoch(self) -> EpochInfo:
        """The current epoch, when it started and when the next one is due (consensus ms)."""
        return await self._transport.epoch_info()

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
        """Ids of every object of one kind (`protocol.state` tags: TARGET, MODEL, ...)."""
        return await self._transport.object_ids(tag)

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
            page = await self.list_targets(status, None if limit is None else min(limit - len(found), MAX_PAGE),
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
        ids = getattr(target_or_model_ids, "model_ids", target_or_model_ids)
        return await self._transport.model_manifests([as_id(i, "a model id") for i in ids], await self._reads_after())

    async def nearest_targets(self, embedding, k: int = 10) -> list[NearbyTarget]:
        """The open targets closest to `embedding` (cosine distance), nearest first."""
        return await self._transport.nearest_targets(embedding_bytes(embedding), k)

    async def get_active_models(self) -> list[ModelView]:
        """Every Active model: id, owner, embedding (float32 bytes), stake, commission, whether
        an update is pending."""
        return await self._transport.active_models(await self._reads_after())

    async def get_leaderboard(self, limit: int = 100) -> Leaderboard:
        return await self._transport.leaderboard(limit)

    # ------------------------------------------------------------------ scoring

    async def score(self, data_url: str | None, manifests, target_embedding, data: bytes | None = None,
                    seed: int = 0) -> ScoreResponse:
        """Score data (given, or downloaded by the service from `data_url`) under every model of
        `manifests` (`get_model_manifests`' views), as the chain's scoring function does:
        {winner (index into manifests), loss_score, embedding, distance, losses}."""
        request = ScoreRequest(manifests=list(manifests), target_embedding=embedding_bytes(target_embedding),
                               data=data, data_url=None if data is not None else data_url, seed=seed)
        return await self._transport.score(request)

    async def scoring_health(self) -> dict:
        """The scoring service's device, replicas, cache and batch figures."""
        return await self._transport.scoring_health()

    # ------------------------------------------------------------------ blobs and weights

    async def upload(self, data: bytes, kind: str = "data") -> str:
        """Put `data` (a submission's data, or with kind="weights" encrypted weights) into the
        network's blob store; returns its URL (its name is the chain's checksum of it)."""
        return (await self._transport.upload(kind, bytes(data))).url

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

    async def fetch_model(self, model_id: bytes) -> bytes:
        """A revealed model's weights file, downloaded from its manifest, checked and decrypted."""
        model = await self.get_object(MODEL, bytes(model_id), Model)
        if model is None:
            raise errors.ObjectNotFound(kind="model", id=bytes(model_id))
        if model.weights_manifest is None or not model.decryption_key:
            raise errors.ModelHasNoWeights(model_id=bytes(model_id))
        manifest = model.weights_manifest
        encrypted = await self.download(manifest.url, manifest.size, manifest.checksum)
        return self.decrypt_weights(encrypted, model.decryption_key)

    async def fetch_submission_data(self, target_id: bytes, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> bytes:
        """The data a filled target's submission revealed, downloaded (within `timeout_s`) and
        checked against its hash and size."""
        target = await self.get_object(TARGET, bytes(target_id), Target)
        if target is None:
            raise errors.ObjectNotFound(kind="target", id=bytes(target_id))
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
        return (await self._transport.wait_for_epoch(epoch, timeout_s)).epoch

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
            if not nonces.in_flight:  # else this client's own calls are ahead of any replica
                nonces.restart((await self.get_account(keypair.address)).nonce)
            nonce = nonces.take()
        try:
            tx = Transaction(sender=keypair.address, nonce=nonce, kind=kind, max_fee=max_fee)
            result = await self._submit(encode(sign_transaction(keypair, tx)), DEFAULT_FINALITY_TIMEOUT_S)
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

    async def transfer(self, keypair: Keypair, recipient: bytes, amount: int) -> TransactionEffects:
        return await self.execute(keypair, Transfer(recipient=recipient, amount=amount))

    async def request_faucet(self, recipient: bytes, amount: int,
                             timeout_s: float = DEFAULT_FINALITY_TIMEOUT_S) -> TransactionEffects:
        """Localnet: coins from the emission pool, signed by a validator's faucet key; raises
        `FinalityTimeout` if no certified checkpoint holds them within `timeout_s` (they may
        still arrive later)."""
        reply = await _finality(self._transport.request_faucet(recipient, amount), timeout_s)
        self._saw([reply])
        return self._effects_of(reply)

    @staticmethod
    def _effects_of(reply: SubmitReply) -> TransactionEffects:
        failure = reply.failure()
        if failure is not None:
            raise_error(failure.code, failure.fields)
        return reply.effects
