"""Each real provider's client against its fake server with 5 ms latency: requests per completed job, client
CPU per job, and a 429 storm (jobs completed, none lost). Last line: one JSON object."""

from __future__ import annotations

import asyncio
import json

from bench import provider_fal, provider_kling, provider_runway


async def main() -> dict[str, object]:
    results: dict[str, object] = {}
    for name, module in (("kling", provider_kling), ("fal", provider_fal), ("runway", provider_runway)):
        results[name] = await module.run(latency=0.005)
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
