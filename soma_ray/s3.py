"""Uploads to the user's own S3-compatible bucket (Cloudflare R2, AWS S3, GCS with HMAC keys), as
the participants' guide and the quickstart configure it:

    S3_BUCKET, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_ENDPOINT_URL, S3_PUBLIC_URL

When all five are set, `SomaClient.upload(data)` puts the bytes into that bucket (boto3, in a
thread: the event loop never blocks) under the key `<BLAKE2b-256 of the bytes, hex>` with the
`public-read` ACL the quickstart uses (S3_ACL overrides it; empty: none), and returns
`S3_PUBLIC_URL/<key>`: the URL the chain records, which validators and the scoring service
download. It must therefore be public: a bucket's public URL (R2's public development URL, a
custom domain) is. The network's fetcher refuses loopback and private addresses
(soma_ray/fetch.py), so a bucket on this machine (the tests' S3 server) is reachable only
through an origin the fetcher is told to allow. When none of the five is set, uploads go to the
network's blob store as before; some but not all set is an error naming the missing ones.

boto3 is imported on the first upload only.
"""
from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from soma_ray.protocol.encoding import blake2b256

VARIABLES = ("S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_ENDPOINT_URL", "S3_PUBLIC_URL")
ACL_VARIABLE = "S3_ACL"
REGION_VARIABLE = "S3_REGION"
DEFAULT_ACL = "public-read"
DEFAULT_REGION = "auto"  # R2's; AWS S3 wants the bucket's region (S3_REGION)


class S3ConfigError(ValueError):
    """The S3_* variables are set in part only, or hold something unusable."""


def object_key(data: bytes) -> str:
    """The key an upload is stored under: the hex of its BLAKE2b-256 checksum (the chain's
    checksum of data and weights alike), so the same bytes land on the same key."""
    return blake2b256(bytes(data)).hex()


@dataclass
class Bucket:
    name: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    endpoint_url: str
    public_url: str
    acl: str | None = DEFAULT_ACL
    region: str = DEFAULT_REGION
    _client: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def url_of(self, key: str) -> str:
        return f"{self.public_url.rstrip('/')}/{key}"

    def client(self):
        """boto3's S3 client for the endpoint (made once; boto3 clients are thread-safe)."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.client(
                    "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key_id,
                    aws_secret_access_key=self.secret_access_key, region_name=self.region,
                    config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                  s3={"addressing_style": "path"}))
            return self._client

    def put(self, data: bytes, kind: str = "data") -> str:
        """Store `data` (blocking); its public URL."""
        key = object_key(data)
        extra = {"ACL": self.acl} if self.acl else {}
        self.client().put_object(Bucket=self.name, Key=key, Body=bytes(data),
                                 ContentType="application/octet-stream", **extra)
        return self.url_of(key)

    async def upload(self, data: bytes, kind: str = "data") -> str:
        """`put` off the event loop."""
        return await asyncio.to_thread(self.put, bytes(data), kind)


def from_environment(environ: Mapping[str, str] | None = None) -> Bucket | None:
    """The bucket the S3_* variables name, None when none is set (S3ConfigError when only some
    are, or a URL is not http(s))."""
    environ = os.environ if environ is None else environ
    values = {name: environ.get(name, "").strip() for name in VARIABLES}
    given = [name for name, value in values.items() if value]
    if not given:
        return None
    missing = [name for name in VARIABLES if not values[name]]
    if missing:
        raise S3ConfigError(f"uploads to your own bucket need all of {', '.join(VARIABLES)}: "
                            f"{', '.join(missing)} not set")
    for name in ("S3_ENDPOINT_URL", "S3_PUBLIC_URL"):
        if not values[name].startswith(("http://", "https://")):
            raise S3ConfigError(f"{name} must include the full http(s):// prefix, got {values[name]!r}")
    acl = environ.get(ACL_VARIABLE, DEFAULT_ACL).strip() or None
    region = environ.get(REGION_VARIABLE, DEFAULT_REGION).strip() or DEFAULT_REGION
    settings = (*values.values(), acl, region)
    with _BUCKETS_LOCK:  # one boto3 client per configuration, not one per upload
        if settings not in _BUCKETS:
            _BUCKETS[settings] = Bucket(*settings)
        return _BUCKETS[settings]


_BUCKETS: dict[tuple, Bucket] = {}
_BUCKETS_LOCK = threading.Lock()
