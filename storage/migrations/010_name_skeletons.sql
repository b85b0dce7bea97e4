-- Names are unique per server by their look too: name_skeleton is the Unicode TR39 confusables skeleton of the
-- case folded name (bot.text.name_skeleton, registered on the connection as likeness_name_skeleton), so "Ava" and
-- "Аva" with a Cyrillic А cannot both exist.
ALTER TABLE characters ADD COLUMN name_skeleton TEXT;
UPDATE characters SET name_skeleton = likeness_name_skeleton(name);
-- Look-alike names made before this rule stay as they are: the oldest keeps the skeleton, the later ones have
-- none (NULLs never clash) until they are renamed.
UPDATE characters SET name_skeleton = NULL
WHERE EXISTS (
    SELECT 1 FROM characters AS earlier
    WHERE earlier.guild_id = characters.guild_id
      AND earlier.name_skeleton = characters.name_skeleton
      AND earlier.id < characters.id
);
CREATE UNIQUE INDEX characters_guild_name_skeleton ON characters (guild_id, name_skeleton);
