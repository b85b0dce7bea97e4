"""/character: the server's subject library. Thin: parse, call bot.library, reply."""

from __future__ import annotations

import io
import re
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_io.arguments import CharacterArg, bot_of, element_autocomplete, upload_of
from bot.discord_io.client import LikenessBot
from bot.discord_io.components import CHARACTER_DELETE, CHARACTER_KEEP, CHARACTER_PAGE
from bot.discord_io.embeds import character_embed, library_page_embed, upload_embed, visibility_text
from bot.discord_io.errors import LikenessView, report_error
from bot.discord_io.replies import actor_of, place_of
from bot.domain import ElementKind, View, Visibility
from bot.library.card_format import SUFFIX
from bot.library.cards import CardUpload
from bot.library.characters import DESCRIPTION_MAX, NAME_MAX
from bot.library.references import ELEMENT_NAME_MAX, UploadResult

PER_PAGE = 10


VIEW_CHOICES = [app_commands.Choice(name=view.label, value=view.value) for view in View]
KIND_CHOICES = [app_commands.Choice(name=kind.value.capitalize(), value=kind.value) for kind in ElementKind]
VISIBILITY_CHOICES = [app_commands.Choice(name=v.value.capitalize(), value=v.value) for v in Visibility]


async def post_upload(interaction: discord.Interaction[Any], what: str, result: UploadResult) -> None:
    """The member gets the details privately; the channel sees the before/after preview.

    The original (ephemeral, deferred) response is edited first: on Discord the first follow-up after a
    deferral would otherwise replace the loading message and inherit its ephemeral flag."""
    character = result.character
    await interaction.edit_original_response(content=None, embed=upload_embed(what, result))
    await interaction.followup.send(
        f"🖼️ <@{interaction.user.id}> added {what} to **{character.name}** (now v{character.version}).",
        file=discord.File(io.BytesIO(result.preview_png), filename="before-after.png"),
    )


async def show_page(interaction: discord.Interaction[Any], number: int, *, edit: bool) -> None:
    library = bot_of(interaction).services.library
    page = await library.page(actor_of(interaction), number, PER_PAGE)
    guild_name = interaction.guild.name if interaction.guild else "this server"
    embed = library_page_embed(guild_name, page)
    view: LikenessView | None = None  # one page: no buttons (a view with none would still be built, stored, sent)
    if page.total_pages > 1:
        view = LikenessView(timeout=None)
        view.add_item(PageButton(page.number - 1, "◀ Previous", disabled=page.number <= 1))
        view.add_item(PageButton(page.number + 1, "Next ▶", disabled=page.number >= page.total_pages))
    if edit:
        await interaction.response.edit_message(embed=embed, view=view)  # None takes the buttons away
    else:
        await interaction.response.send_message(embed=embed, view=view or discord.utils.MISSING, ephemeral=True)


class PageButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CHARACTER_PAGE.pattern):
    """Previous/Next on /character list; the page number lives in the custom_id, so it survives restarts."""

    def __init__(self, number: int, label: str = "Page", *, disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.secondary,
                custom_id=CHARACTER_PAGE.build(n=max(number, 1)),
                disabled=disabled,
            )
        )
        self.number = max(number, 1)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PageButton:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await show_page(interaction, self.number, edit=True)
        except Exception as exc:
            await report_error(interaction, exc)


class DeleteButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CHARACTER_DELETE.pattern):
    """Confirms /character delete. Rules are checked again on press: the press may come much later."""

    def __init__(self, character_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Delete for everyone",
                style=discord.ButtonStyle.danger,
                custom_id=CHARACTER_DELETE.build(id=character_id),
            )
        )
        self.character_id = character_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> DeleteButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            name = await bot_of(interaction).services.library.delete_by_id(actor_of(interaction), self.character_id)
        except Exception as exc:
            await report_error(interaction, exc)
            return
        await interaction.response.edit_message(content=f"🗑️ **{name}** was deleted.", view=None)


class KeepButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CHARACTER_KEEP.pattern):
    def __init__(self) -> None:
        super().__init__(
            discord.ui.Button(label="Keep it", style=discord.ButtonStyle.secondary, custom_id=CHARACTER_KEEP.build())
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> KeepButton:
        return cls()

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.edit_message(content="Nothing was deleted.", view=None)


@app_commands.guild_only()
class Characters(commands.GroupCog, group_name="character", group_description="The server's character library"):
    def __init__(self, bot: LikenessBot) -> None:
        self.bot = bot
        super().__init__()

    views = app_commands.Group(name="view", description="Reference views of a character")
    elements = app_commands.Group(name="element", description="Elements (outfit, props) bound to a character")

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(PageButton, DeleteButton, KeepButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(PageButton, DeleteButton, KeepButton)

    @app_commands.command(name="create", description="Add a character to this server's library")
    @app_commands.describe(
        name=f"A name unique in this server (1-{NAME_MAX} characters)",
        description="The locked traits every shot keeps: age, build, face, hair, outfit",
    )
    async def create(
        self,
        interaction: discord.Interaction[Any],
        name: app_commands.Range[str, 1, NAME_MAX],
        description: app_commands.Range[str, 1, DESCRIPTION_MAX],
    ) -> None:
        library, actor = self.bot.services.library, actor_of(interaction)
        new = await library.vet_new(actor, name, description, nsfw_allowed=place_of(interaction).nsfw)
        await interaction.response.defer(thinking=True)  # the write waits its turn in the database thread
        character = await library.add(actor, new)
        details = await library.details(actor, character)
        await interaction.edit_original_response(
            content=f"✨ <@{interaction.user.id}> added **{character.name}** to the library.",
            embed=character_embed(details),
        )

    @app_commands.command(name="show", description="Show a character's traits, views and elements")
    @app_commands.describe(character="The character to show")
    async def show(self, interaction: discord.Interaction[Any], character: CharacterArg) -> None:
        details = await self.bot.services.library.details(actor_of(interaction), character)
        await interaction.response.send_message(embed=character_embed(details))

    @app_commands.command(name="list", description="List the characters of this server")
    @app_commands.describe(page="Which page to start on (10 characters a page)")
    async def list_(self, interaction: discord.Interaction[Any], page: app_commands.Range[int, 1] = 1) -> None:
        await show_page(interaction, page, edit=False)

    @app_commands.command(name="edit", description="Rename a character or change its traits")
    @app_commands.describe(
        character="The character to change",
        new_name=f"A new name (1-{NAME_MAX} characters)",
        description="New locked traits (age, build, face, hair, outfit); bumps the version",
    )
    async def edit(
        self,
        interaction: discord.Interaction[Any],
        character: CharacterArg,
        new_name: app_commands.Range[str, 1, NAME_MAX] | None = None,
        description: app_commands.Range[str, 1, DESCRIPTION_MAX] | None = None,
    ) -> None:
        updated = await self.bot.services.library.edit(
            actor_of(interaction),
            character,
            new_name=new_name,
            description=description,
            nsfw_allowed=place_of(interaction).nsfw,
        )
        details = await self.bot.services.library.details(actor_of(interaction), updated)
        await interaction.response.send_message(
            f"✏️ **{updated.name}** was updated.", embed=character_embed(details), ephemeral=True
        )

    @app_commands.command(name="delete", description="Delete a character with its views and elements")
    @app_commands.describe(character="The character to delete (asks for confirmation)")
    async def delete(self, interaction: discord.Interaction[Any], character: CharacterArg) -> None:
        self.bot.services.library.ensure_can_change(actor_of(interaction), character)
        view = LikenessView(timeout=None)
        view.add_item(DeleteButton(character.id))
        view.add_item(KeepButton())
        await interaction.response.send_message(
            f"Delete **{character.name}** for everyone in this server? Its views and elements go with it, "
            "and this cannot be undone.",
            view=view,
            ephemeral=True,
        )

    @app_commands.command(name="lock", description="Lock a character so only its owner can change it")
    @app_commands.describe(character="The character to lock or unlock", locked="True to lock, False to unlock")
    async def lock(self, interaction: discord.Interaction[Any], character: CharacterArg, locked: bool = True) -> None:
        updated = await self.bot.services.library.set_locked(actor_of(interaction), character, locked)
        state = "🔒 locked: only its owner can change it now" if updated.locked else "🔓 unlocked"
        await interaction.response.send_message(f"**{updated.name}** is {state}.", ephemeral=True)

    @app_commands.command(name="visibility", description="Choose who sees and uses a character")
    @app_commands.describe(
        character="The character to share or hide",
        who="Server: every member. Private: only its owner. Roles: its owner and members with the roles below",
        role="For Roles: members holding this role see the character",
        role2="For Roles: a second role whose members see it",
        role3="For Roles: a third role whose members see it",
    )
    @app_commands.choices(who=VISIBILITY_CHOICES)
    async def visibility(
        self,
        interaction: discord.Interaction[Any],
        character: CharacterArg,
        who: app_commands.Choice[str],
        role: discord.Role | None = None,
        role2: discord.Role | None = None,
        role3: discord.Role | None = None,
    ) -> None:
        chosen = Visibility(who.value)
        roles = [r.id for r in (role, role2, role3) if r is not None]
        updated = await self.bot.services.library.set_visibility(actor_of(interaction), character, chosen, roles)
        note = " (the roles you picked only count with **Roles**)" if roles and chosen is not Visibility.ROLES else ""
        await interaction.response.send_message(
            f"**{updated.name}** (v{updated.version}) is visible to: {visibility_text(updated)}.{note}",
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(name="export", description=f"Download a character as a portable card ({SUFFIX})")
    @app_commands.describe(character="The character to export, with its traits, views and elements")
    async def export(self, interaction: discord.Interaction[Any], character: CharacterArg) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        card = await self.bot.services.cards.export(
            actor_of(interaction), character, max_bytes=interaction.filesize_limit
        )
        await interaction.followup.send(
            f"📦 The card of **{character.name}**. Bring it into another server with `/character import`.",
            file=discord.File(io.BytesIO(card.data), filename=card.filename),
            ephemeral=True,
        )

    @app_commands.command(name="import", description="Add a character to this server from a card")
    @app_commands.describe(
        card=f"A {SUFFIX} file made by /character export",
        name=f"A new name for it here, e.g. when the card's name is taken (1-{NAME_MAX} characters)",
    )
    async def import_(
        self,
        interaction: discord.Interaction[Any],
        card: discord.Attachment,
        name: app_commands.Range[str, 1, NAME_MAX] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        actor = actor_of(interaction)
        upload = CardUpload(card.url, card.filename, card.size, card.content_type)
        async with self.bot.inflight.track():  # a graceful stop lets an import finish
            character = await self.bot.services.cards.import_card(
                actor, upload, name, nsfw_allowed=place_of(interaction).nsfw
            )
            details = await self.bot.services.library.details(actor, character)
        # the (ephemeral) deferral is answered first, so the announcement below is a new, public message
        await interaction.edit_original_response(
            content=f"📥 Imported **{character.name}**: {len(details.views)} views, {len(details.elements)} elements. "
            "It is yours and every member of this server can use it (see `/character visibility`)."
        )
        await interaction.followup.send(
            f"📥 <@{interaction.user.id}> imported **{character.name}** into the library.",
            embed=character_embed(details),
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @views.command(name="add", description="Add or replace a reference view (the old image stays in history)")
    @app_commands.describe(
        character="The character this view shows",
        view="Which angle the image shows",
        image="PNG, JPEG, WebP, GIF or AVIF, at least 300 px; a plain background works best",
    )
    @app_commands.choices(view=VIEW_CHOICES)
    async def view_add(
        self,
        interaction: discord.Interaction[Any],
        character: CharacterArg,
        view: app_commands.Choice[str],
        image: discord.Attachment,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        chosen = View(view.value)
        async with self.bot.inflight.track():  # a graceful stop lets an upload finish
            result = await self.bot.services.references.add_view(
                actor_of(interaction), character, chosen, upload_of(image)
            )
            await post_upload(interaction, f"the {chosen.label.lower()} view", result)

    @views.command(name="remove", description="Remove a reference view (it stays in history)")
    @app_commands.describe(character="The character", view="The view to remove")
    @app_commands.choices(view=VIEW_CHOICES)
    async def view_remove(
        self, interaction: discord.Interaction[Any], character: CharacterArg, view: app_commands.Choice[str]
    ) -> None:
        chosen = View(view.value)
        updated = await self.bot.services.references.remove_view(actor_of(interaction), character, chosen)
        await interaction.response.send_message(
            f"Removed the {chosen.label.lower()} view of **{updated.name}** (now v{updated.version}).", ephemeral=True
        )

    @elements.command(name="add", description="Add an element (outfit, prop...) bound to a character")
    @app_commands.describe(
        character="The character the element belongs to",
        name=f"A short name, unique for this character (1-{ELEMENT_NAME_MAX} characters), e.g. jacket",
        kind="What kind of element it is",
        image="PNG, JPEG, WebP, GIF or AVIF of the element alone, at least 300 px",
    )
    @app_commands.choices(kind=KIND_CHOICES)
    async def element_add(
        self,
        interaction: discord.Interaction[Any],
        character: CharacterArg,
        name: app_commands.Range[str, 1, ELEMENT_NAME_MAX],
        kind: app_commands.Choice[str],
        image: discord.Attachment,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        async with self.bot.inflight.track():  # a graceful stop lets an upload finish
            result = await self.bot.services.references.add_element(
                actor_of(interaction),
                character,
                name,
                ElementKind(kind.value),
                upload_of(image),
                nsfw_allowed=place_of(interaction).nsfw,
            )
            await post_upload(interaction, f"the {kind.value} **{name.strip()}**", result)

    @elements.command(name="remove", description="Remove an element from a character")
    @app_commands.describe(character="The character", element="The element to remove")
    @app_commands.autocomplete(element=element_autocomplete)
    async def element_remove(
        self, interaction: discord.Interaction[Any], character: CharacterArg, element: str
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # a new version of the character: a transaction
        updated = await self.bot.services.references.remove_element(actor_of(interaction), character, element)
        await interaction.edit_original_response(
            content=f"Removed **{element.strip()}** from **{updated.name}** (now v{updated.version})."
        )

    @app_commands.command(name="bind", description="Element Binding: include an element in every shot, or not")
    @app_commands.describe(
        character="The character",
        element="The element to bind or unbind",
        state="on: the element goes into every sheet and shot; off: it is kept but left out",
    )
    @app_commands.autocomplete(element=element_autocomplete)
    async def bind(
        self,
        interaction: discord.Interaction[Any],
        character: CharacterArg,
        element: str,
        state: Literal["on", "off"],
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # a new version of the character: a transaction
        updated, bound = await self.bot.services.references.bind(
            actor_of(interaction), character, element, state == "on"
        )
        verb = "bound to" if bound.bound else "unbound from"
        await interaction.edit_original_response(
            content=f"**{bound.name}** is {verb} **{updated.name}** (v{updated.version})."
        )


async def setup(bot: LikenessBot) -> None:
    await bot.add_cog(Characters(bot))
