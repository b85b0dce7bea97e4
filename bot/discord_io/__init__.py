"""Everything that speaks Discord: replies, errors, embeds, views."""
