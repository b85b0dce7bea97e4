"""Embeds a member sees: a character card and a page of the library."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import discord

from bot.domain import Character, Page, View, Visibility
from bot.library.characters import CharacterDetails
from bot.library.references import UploadResult

COLOR = discord.Colour(0x5B8DEF)
LOCKED = "🔒"
_VISIBILITY_MARK = {Visibility.SERVER: "", Visibility.PRIVATE: " · 🔐 private", Visibility.ROLES: " · 👥 roles"}
_VIEW_LABELS = tuple((view, view.label) for view in View)  # every card lists them (iterating an enum is slow)


_CARDS: OrderedDict[Hashable, discord.Embed] = OrderedDict()  # the last cards built, by what they show
_CARDS_KEPT = 512


def character_embed(details: CharacterDetails) -> discord.Embed:
    """A character's card. The same card is shown again and again (/character show), so the last few hundred are
    kept by everything they show; nobody changes an embed once built (each is sent as it is)."""
    key = (
        details.character,
        tuple(view.view for view in details.views),
        tuple((element.name, element.kind, element.bound) for element in details.elements),
    )
    card = _CARDS.get(key)
    if card is None:
        card = _CARDS[key] = _build_card(details)
        if len(_CARDS) > _CARDS_KEPT:
            _CARDS.popitem(last=False)
    else:
        _CARDS.move_to_end(key)
    return card


def _build_card(details: CharacterDetails) -> discord.Embed:
    character = details.character
    title = f"{LOCKED} {character.name}" if character.locked else character.name
    embed = discord.Embed(title=title, description=character.description, colour=COLOR)
    embed.add_field(name="Owner", value=f"<@{character.owner_id}>")
    embed.add_field(name="Version", value=f"v{character.version}")
    embed.add_field(name="Locked", value="Yes: only the owner can change it" if character.locked else "No")
    embed.add_field(name="Visible to", value=visibility_text(character), inline=False)
    present = {view.view for view in details.views}
    embed.add_field(
        name=f"Reference views ({len(present)}/{len(_VIEW_LABELS)})",
        value=" · ".join(f"{'✅' if view in present else '▫️'} {label}" for view, label in _VIEW_LABELS),
        inline=False,
    )
    if details.elements:
        elements = "\n".join(
            f"{'🔗' if element.bound else '⛓️‍💥'} **{element.name}** ({element.kind.value})"
            for element in details.elements
        )
    else:
        elements = "None yet: an outfit, a prop or an accessory can be bound to the character."
    embed.add_field(name="Elements", value=elements, inline=False)
    missing = details.missing_views
    if missing:
        embed.set_footer(text=f"Next view to add: {missing[0].label}")
    return embed


def visibility_text(character: Character) -> str:
    """Who sees the character, as /character show and /character visibility say it."""
    if character.visibility is Visibility.PRIVATE:
        return f"🔐 Private: only <@{character.owner_id}> (and members with Manage Server)"
    if character.visibility is Visibility.ROLES:
        roles = ", ".join(f"<@&{role_id}>" for role_id in character.visible_role_ids)
        return f"👥 Members with {roles}, <@{character.owner_id}> and members with Manage Server"
    return "🌐 Everyone in this server"


def _library_line(c: Character) -> str:
    return (
        f"{LOCKED if c.locked else '•'} **{c.name}** · v{c.version} · <@{c.owner_id}>{_VISIBILITY_MARK[c.visibility]}"
    )


def library_page_embed(guild_name: str, page: Page[Character]) -> discord.Embed:
    embed = discord.Embed(title=f"Characters of {guild_name}", colour=COLOR)
    if not page.items:
        embed.description = "The library is empty. Create the first character with `/character create`."
    else:
        embed.description = "\n".join(_library_line(c) for c in page.items)
    noun = "character" if page.total_items == 1 else "characters"
    embed.set_footer(text=f"Page {page.number}/{page.total_pages} · {page.total_items} {noun}")
    return embed


def upload_embed(what: str, result: UploadResult) -> discord.Embed:
    """The uploader's private receipt: what was saved, how it was cleaned, and anything to fix."""
    method = "plain background keyed out" if result.method == "flat-key" else "background removed by the model"
    embed = discord.Embed(
        title=f"Saved {what} of {result.character.name}",
        description=f"Cleanup: {method}. The character is now v{result.character.version}.",
        colour=COLOR,
    )
    if result.notes:
        embed.add_field(name="What I did", value="\n".join(f"• {note}" for note in result.notes), inline=False)
    if result.warnings:
        embed.add_field(name="⚠️ Check this", value="\n".join(f"• {w}" for w in result.warnings), inline=False)
    return embed
