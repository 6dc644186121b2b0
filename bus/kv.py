"""JetStream key-value buckets: state that outlives a process, and leases that say who owns what.

A bucket's `ttl` ages out every entry that is not rewritten in time, which is what makes a lease
a lease: the holder rewrites it (compare-and-set on the revision it wrote) well inside the ttl;
a holder that dies stops rewriting, the entry ages out, and another process can create it.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from bus.connection import Bus
from bus.errors import BusError

log = logging.getLogger(__name__)


class KvError(BusError):
    """The bucket could not be read or written (the server is away or refused)."""


class Stale(KvError):
    """A compare-and-set lost: someone else wrote the key since the revision we hold."""


class Entry(NamedTuple):
    value: bytes
    revision: int


class Bucket:
    def __init__(self, kv: KeyValue, name: str) -> None:
        self._kv = kv
        self.name = name

    async def get(self, key: str) -> Entry | None:
        try:
            entry = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise KvError(f"{self.name}/{key}: {exc!r}") from exc
        if entry.value is None or entry.revision is None:
            return None
        return Entry(bytes(entry.value), entry.revision)

    async def put(self, key: str, value: bytes) -> int:
        try:
            return int(await self._kv.put(key, value))
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise KvError(f"{self.name}/{key}: {exc!r}") from exc

    async def create(self, key: str, value: bytes) -> int:
        """Write `key` only if it does not exist (or was deleted / aged out); else `Stale`."""
        try:
            return int(await self._kv.create(key, value))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Stale(f"{self.name}/{key} exists") from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code == 10071:  # wrong last sequence
                raise Stale(f"{self.name}/{key} exists") from exc
            raise KvError(f"{self.name}/{key}: {exc!r}") from exc
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise KvError(f"{self.name}/{key}: {exc!r}") from exc

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Write `key` only if its revision is still `revision`; else `Stale`."""
        try:
            return int(await self._kv.update(key, value, last=revision))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Stale(f"{self.name}/{key} changed") from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code == 10071:
                raise Stale(f"{self.name}/{key} changed") from exc
            raise KvError(f"{self.name}/{key}: {exc!r}") from exc
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise KvError(f"{self.name}/{key}: {exc!r}") from exc

    async def delete(self, key: str, revision: int | None = None) -> None:
        try:
            await self._kv.delete(key, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise Stale(f"{self.name}/{key} changed") from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code == 10071:
                raise Stale(f"{self.name}/{key} changed") from exc
            raise KvError(f"{self.name}/{key}: {exc!r}") from exc
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise KvError(f"{self.name}/{key}: {exc!r}") from exc

    async def keys(self) -> list[str]:
        try:
            return list(await self._kv.keys())
        except nats.js.errors.NoKeysError:
            return []
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise KvError(f"{self.name}: {exc!r}") from exc


async def open_bucket(
    bus: Bus, name: str, *, ttl: float | None = None, replicas: int = 1
) -> Bucket:
    """The bucket `name`, created (file storage, one value per key) when it does not exist."""
    try:
        kv = await bus.js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        config = KeyValueConfig(
            bucket=name,
            history=1,
            ttl=ttl,
            storage=StorageType.FILE,
            replicas=replicas,
        )
        try:
            kv = await bus.js.create_key_value(config)
        except nats.js.errors.APIError:
            # Another process created it between our look and our create.
            kv = await bus.js.key_value(name)
    return Bucket(kv, name)


class Lease:
    """Exclusive ownership of one key in a ttl bucket, by one holder at a time."""

    def __init__(self, bucket: Bucket, key: str, holder: str) -> None:
        self._bucket = bucket
        self.key = key
        self.holder = holder
        self._revision: int | None = None

    @property
    def held(self) -> bool:
        return self._revision is not None

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or we already do). Never raises on contention."""
        if self._revision is not None:
            return await self.renew()
        try:
            self._revision = await self._bucket.create(self.key, self.holder.encode())
        except Stale:
            current = await self._bucket.get(self.key)
            if current is not None and current.value == self.holder.encode():
                # Ours from before a restart under the same holder name: take it back.
                try:
                    self._revision = await self._bucket.update(
                        self.key, self.holder.encode(), current.revision
                    )
                except Stale:
                    return False
                return True
            return False
        return True

    async def renew(self) -> bool:
        """Rewrite the lease; False (and no longer held) when someone else has it now."""
        if self._revision is None:
            return False
        try:
            self._revision = await self._bucket.update(
                self.key, self.holder.encode(), self._revision
            )
        except Stale:
            self._revision = None
            return False
        return True

    async def release(self) -> None:
        if self._revision is None:
            return
        revision, self._revision = self._revision, None
        try:
            await self._bucket.delete(self.key, revision)
        except KvError as exc:
            log.info("lease %s: release skipped: %r", self.key, exc)
