-- Per-server negative prompt presets (JSON list of preset keys; NULL = the defaults) and extra terms.
ALTER TABLE guild_settings ADD COLUMN negative_presets TEXT;
ALTER TABLE guild_settings ADD COLUMN negative_extra TEXT;
