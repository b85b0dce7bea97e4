"""Persistence: the SQLite database, its migrations, narrow repositories, and the blob store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.audit import AuditRepository
from storage.blobs import BlobStore
from storage.characters import CharacterRepository
from storage.db import Database
from storage.guilds import GuildSettingsRepository
from storage.jobs import JobRepository
from storage.ledger import LedgerRepository
from storage.pending import PendingShotRepository
from storage.provider_keys import ProviderKeyRepository
from storage.references import ReferenceRepository, SheetRepository


@dataclass
class Storage:
    db: Database
    blobs: BlobStore
    characters: CharacterRepository
    references: ReferenceRepository
    guilds: GuildSettingsRepository
    sheets: SheetRepository
    jobs: JobRepository
    provider_keys: ProviderKeyRepository
    ledger: LedgerRepository
    audit: AuditRepository
    pending: PendingShotRepository

    @classmethod
    async def open(cls, db_path: Path | str, blob_dir: Path) -> Storage:
        """Open the database, bring its schema up to date, and build the repositories."""
        db = await Database.open(db_path)
        await db.migrate()
        characters = CharacterRepository(db)
        return cls(
            db=db,
            blobs=BlobStore(blob_dir),
            characters=characters,
            references=ReferenceRepository(db, characters),
            guilds=GuildSettingsRepository(db),
            sheets=SheetRepository(db),
            jobs=JobRepository(db),
            provider_keys=ProviderKeyRepository(db),
            ledger=LedgerRepository(db),
            audit=AuditRepository(db),
            pending=PendingShotRepository(db),
        )

    async def close(self) -> None:
        await self.db.close()
