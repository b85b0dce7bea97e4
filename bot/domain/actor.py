"""Who is asking: the member, the server they ask in, and what they may manage there."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    """Who is asking, where, whether they manage the server (Manage Server or Administrator), and their roles."""

    guild_id: int
    user_id: int
    is_manager: bool = False
    role_ids: frozenset[int] = frozenset()
    manages_server: bool = False  # Manage Server itself (server settings); is_manager also counts manager roles
