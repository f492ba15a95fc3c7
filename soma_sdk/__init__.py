"""`soma_sdk`: the SDK with the reference SDK's names, signatures and units, over soma-ray.

    from soma_sdk import SomaClient, Keypair

    client = await SomaClient(chain="testnet")        # a name `soma network add` gave; "localnet" is built in
    kp = Keypair.from_secret_key(secret)              # 64 hex digits, 0x optional, or `soma wallet export`'s text
    balance = await client.get_balance(kp.address())  # Decimal SOMA
    targets = await client.get_targets(status="open")

A program written against the reference SDK's documented names, signatures and units runs
unchanged apart from the network it names. `SomaClient` here is `soma_ray.client.SomaClient`
with the reference's units where they differ: amounts in SOMA where the reference takes SOMA
(converted exactly, `to_shannons`), the balance in SOMA, ids and addresses returned as 0x-hex
strings, embeddings returned as lists of floats (any float sequence is accepted), `get_epoch`,
`score`, the targets and models as the reference names their fields (soma_sdk/types.py).
Where the reference is lossy or surprising ours stays exact: docs/gateway.md, "Coming from the
reference SDK", lists every difference kept and why.

Errors are the library's typed errors (`soma_ray.protocol.errors`), raised as subclasses that
are also `RuntimeError` (as the reference's are) and whose text starts with the error's name,
so `"TargetNotOpen" in str(e)` and `except RuntimeError` work as with the reference, and
`except errors.TargetNotOpen` as with soma-ray.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
from decimal import Decimal

from soma_ray.client import DEFAULT_FAUCET_SHANNONS, FinalityTimeout
from soma_ray.client import SomaClient as _LibraryClient
from soma_ray.participant import as_id
from soma_ray.protocol import errors
from soma_ray.protocol.crypto import Address, Keypair
from soma_ray.protocol.encoding import blake2b256
from soma_ray.protocol.params import SHANNONS_PER_SOMA
from soma_sdk.types import (
    ActiveModel, EpochInfo, FaucetResponse, ModelManifest, ScoreResult, Target, TargetPage, hex_id,
)

__all__ = ["ActiveModel", "Address", "EpochInfo", "FaucetResponse", "FinalityTimeout", "Keypair",
           "ModelManifest", "ScoreResult", "SomaClient", "Target", "TargetPage", "errors"]

_REFERENCE_ERRORS: dict[type, type] = {}


def reference_error(error: errors.ProtocolError) -> errors.ProtocolError:
    """`error` as the same typed error that is also a RuntimeError and whose text starts with its
    name ("TargetNotOpen: the target is Filled, not Open")."""
    if isinstance(error, RuntimeError):
        return error
    cls = type(error)
    wrapped = _REFERENCE_ERRORS.get(cls)
    if wrapped is None:
        wrapped = _REFERENCE_ERRORS[cls] = type(cls.__name__, (cls, RuntimeError), {
            "__module__": cls.__module__,
            "__str__": lambda self: f"{self.code}: {cls.__str__(self)}",
        })
    copy = wrapped.__new__(wrapped)
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    return copy


def _reference_errors(method):
    @functools.wraps(method)
    async def call(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except errors.ProtocolError as error:
            raised = reference_error(error)
            if raised is error:
                raise
            raise raised from None
    return call


def to_shannons(soma: int | float | str | Decimal) -> int:
    """SOMA (a number, or its text) as whole shannons, exactly: the decimal value of what is
    given (a float by its shortest repr), refused (ValueError) below one shannon's precision or
    negative."""
    value = Decimal(str(soma)) * SHANNONS_PER_SOMA
    if value != value.to_integral_value() or value < 0:
        raise ValueError(f"{soma!r} SOMA is not a whole number of shannons (1 SOMA = 1e9 shannons)")
    return int(value)


def to_soma(shannons: int) -> Decimal:
    return Decimal(int(shannons)) / SHANNONS_PER_SOMA


def _key_bytes(key: bytes | str) -> bytes:
    if isinstance(key, str):
        return bytes.fromhex(key.removeprefix("0x"))
    return bytes(key)


class SomaClient(_LibraryClient):
    """The reference SDK's client (see the module docstring): `await SomaClient(rpc_url=None, *,
    chain=None, scoring_url=None, admin_url=None, faucet_url=None)`, `async with`, `await
    client.close()`."""

    # ------------------------------------------------------------------ units

    @staticmethod
    def to_shannons(soma) -> int:
        return to_shannons(soma)

    @staticmethod
    def to_soma(shannons: int) -> Decimal:
        return to_soma(shannons)

    @staticmethod
    def commitment(data: bytes) -> str:
        """The chain's checksum of data or encrypted weights (BLAKE2b-256), as 0x-hex."""
        return hex_id(blake2b256(bytes(data)))

    @staticmethod
    def encrypt_weights(data: bytes, key: bytes | None = None) -> tuple[bytes, bytes]:
        """(encrypted weights, 32-byte key). A fresh random key each time: `key` must be None
        (each encryption under its own key is what the commit-reveal relies on)."""
        if key is not None:
            raise ValueError("soma-ray encrypts every weights file under a fresh random key: pass no key")
        return _LibraryClient.encrypt_weights(bytes(data))

    @staticmethod
    def decrypt_weights(data: bytes, key: bytes | str) -> bytes:
        return _LibraryClient.decrypt_weights(bytes(data), _key_bytes(key))

    async def get_balance(self, address: str | bytes) -> Decimal:
        """The balance in SOMA, exactly (a Decimal; the reference's float rounds)."""
        return to_soma(await self.balance_shannons(address))

    async def request_faucet(self, address: str | bytes, amount=None, timeout_s: float = 60.0) -> FaucetResponse:
        """Coins from the network's faucet: `amount` SOMA (default 2, the reference's)."""
        shannons = DEFAULT_FAUCET_SHANNONS if amount is None else to_shannons(amount)
        effects = await _LibraryClient.request_faucet(self, address, shannons, timeout_s)
        return FaucetResponse("Success", to_soma(shannons), hex_id(effects.transaction_digest))

    async def transfer_coin(self, signer: Keypair, recipient: str | bytes, amount):
        """Send `amount` SOMA; the effects once final."""
        return await _LibraryClient.transfer(self, signer, recipient, to_shannons(amount))

    transfer = transfer_coin

    async def pay_coins(self, signer: Keypair, recipients: list, amounts: list) -> list:
        """Send `amounts[i]` SOMA to `recipients[i]`, all at once (consecutive nonces)."""
        if len(recipients) != len(amounts):
            raise ValueError("pay_coins: one amount per recipient")
        return list(await asyncio.gather(*(self.transfer_coin(signer, r, a) for r, a in zip(recipients, amounts))))

    async def create_model(self, signer: Keypair, commission_rate: int, stake_amount=None) -> str:
        """A new model (commission in basis points); `stake_amount` SOMA, None: all available
        (the balance less the fees of this transaction and of the commit and reveal to come,
        `stake_all_available`). Its id."""
        stake = (await self.stake_all_available(signer) if stake_amount is None
                 else to_shannons(stake_amount))
        return hex_id(await _LibraryClient.create_model(self, signer, commission_rate, stake))

    async def commit_model(self, signer: Keypair, model_id, weights_url: str, encrypted_weights: bytes,
                           decryption_key, embedding):
        return await _LibraryClient.commit_model(self, signer, model_id, weights_url, encrypted_weights,
                                                 _key_bytes(decryption_key), embedding)

    async def reveal_model(self, signer: Keypair, model_id, decryption_key, embedding):
        return await _LibraryClient.reveal_model(self, signer, model_id, _key_bytes(decryption_key), embedding)

    async def submit_data(self, signer: Keypair, target_id, data: bytes, data_url: str, model_id, embedding,
                          distance_score: float, loss_score: float) -> str:
        """Commit then reveal (after the library's checks); the submission's id."""
        return hex_id(await _LibraryClient.submit_data(self, signer, target_id, bytes(data), data_url,
                                                       model_id, embedding, distance_score, loss_score))

    async def add_stake(self, signer: Keypair, validator, amount=None) -> str:
        """Delegate `amount` SOMA (default the network's minimum model stake); the stake's id."""
        shannons = None if amount is None else to_shannons(amount)
        return hex_id(await _LibraryClient.add_stake(self, signer, validator, shannons))

    async def add_stake_to_model(self, signer: Keypair, model_id, amount=None):
        shannons = None if amount is None else to_shannons(amount)
        return await _LibraryClient.add_stake_to_model(self, signer, model_id, shannons)

    # ------------------------------------------------------------------ views

    async def get_epoch(self, epoch: int | None = None) -> EpochInfo:
        """The current epoch (a past one is not kept: ValueError unless `epoch` is current)."""
        info = EpochInfo.of(await self._transport.epoch_info())
        if epoch is not None and epoch != info.epoch:
            raise ValueError(f"epoch {epoch}: only the current epoch ({info.epoch}) is answered")
        return info

    async def get_protocol_version(self) -> int:
        return (await self.get_system_state()).protocol_version

    async def get_architecture_version(self) -> int:
        return (await self._parameters()).model_architecture_version

    async def list_targets(self, status: str | None = None, claimable: bool = False, epoch: int | None = None,
                           limit: int | None = None, submitter=None, page_token: str | None = None) -> TargetPage:
        """One page: {targets, next_page_token} (`epoch`: only targets generated in it)."""
        page = await _LibraryClient.list_targets(self, "claimable" if claimable else status, limit,
                                                 submitter, None, page_token)
        return TargetPage([Target.of(t) for t in page.targets if epoch is None or t.generation_epoch == epoch],
                          page.next_page_token)

    async def get_targets(self, status: str | None = None, claimable: bool = False, epoch: int | None = None,
                          limit: int | None = None, submitter=None) -> list[Target]:
        """Every target matching, over all pages (the reference returns the first page only)."""
        found = await _LibraryClient.get_targets(self, "claimable" if claimable else status,
                                                 None if epoch is not None else limit, submitter)
        targets = [Target.of(t) for t in found if epoch is None or t.generation_epoch == epoch]
        return targets if limit is None else targets[:limit]

    async def get_target(self, target_id) -> Target:
        return Target.of(await _LibraryClient.get_target(self, target_id))

    async def get_active_models(self) -> list[ActiveModel]:
        return [ActiveModel.of(m) for m in await _LibraryClient.get_active_models(self)]

    async def get_model_manifests(self, model_ids_or_target) -> list[ModelManifest]:
        """One per model, in order; a model without weights raises ModelHasNoWeights (the
        reference leaves it out silently, which shifts every index after it)."""
        return [ModelManifest.of(m) for m in await self._model_manifests(model_ids_or_target)]

    async def score(self, data_url: str | None, models, target_embedding, data: bytes | None = None,
                    data_checksum=None, data_size: int | None = None, seed: int = 0) -> ScoreResult:
        """{winner, loss_score, embedding, distance} (and every model's loss) from the scoring
        service (`scoring_url`, or the network's)."""
        if data is not None and data_checksum is not None and _key_bytes(data_checksum) != blake2b256(bytes(data)):
            raise ValueError("data_checksum is not the checksum of data")
        return ScoreResult.of(await self._score_request(data_url, models, target_embedding, data, seed,
                                                        data_size=data_size))


for _name, _method in list(vars(SomaClient).items()) + [
        (n, m) for n, m in vars(_LibraryClient).items() if n not in vars(SomaClient)]:
    if not _name.startswith("_") and inspect.iscoroutinefunction(_method):
        setattr(SomaClient, _name, _reference_errors(_method))
for _cls in _LibraryClient.__mro__[1:]:
    for _name, _method in vars(_cls).items():
        if (not _name.startswith("_") and inspect.iscoroutinefunction(_method)
                and _name not in vars(SomaClient)):
            setattr(SomaClient, _name, _reference_errors(_method))
del _name, _method, _cls
