"""Likeness: a self-hosted Discord bot that keeps a community's AI characters looking the same.

The map (each folder answers one question; imports run one way, from the top of this list down):

- `cogs/` (beside `bot/`): the slash commands, one thin file per group: parse, check, call a service, reply.
- `discord_io/`: everything that speaks Discord: the client, components (every custom id, built and parsed in
  one place), arguments (transformers, autocompletes), delivery of results, embeds, errors, replies.
- `library/`: the server's subject library: characters, reference views, elements, character cards, sheets.
- `generation/`: making things: shot orders (what /animate queues) and the prompt spine.
- `governance/`: what a server allows: budget, limits, the content screen, the server's settings.
- `jobs/`: the durable render queue: scheduler, worker, provider callbacks, retention.
- `providers/`: the render providers, one module each: its `SPEC` (spec.py) says all the bot knows of it (settings,
  keys, factory, prompt dialect, doctor check), and `catalog.py` lists them; the registry, server keys (accounts).
- `imaging/`: pixels: intake of uploads, background removal, provider prep, sheet drawing, video, model files.
- `domain/`: the plain models and enums, errors, `Actor`, money: imports nothing else of the bot.
- `infra/`: the process: settings, logs, metrics, listeners, shutdown, the instance lock.
- `ops/`: for admins at a shell: the CLI, the doctor, backup and restore, the demo, the local image check.
- `runtime.py`: the composition root: builds all of the above from the settings, in dependency order on one exit
  stack, and closes it in the reverse order.

`storage/` (beside `bot/`) holds the SQL and the blob store.
"""
