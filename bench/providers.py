"""Each provider's client against its fake server with 5 ms latency: requests per completed job, client CPU per job,
a 429 storm (jobs completed, none lost), the late-2026 paths (Kling 3.0 on both APIs, fal's O3 with two
characters, Runway's gen4.5 and multi-shot recipe), and ComfyUI's overhead per job. Last line: one JSON object."""

from __future__ import annotations

import asyncio
import json

from bench import provider_comfyui, provider_fal, provider_kling, provider_runway


async def main() -> dict[str, object]:
    results: dict[str, object] = {}
    for name, module in (("kling", provider_kling), ("fal", provider_fal), ("runway", provider_runway)):
        results[name] = await module.run(latency=0.005)
    results["comfyui"] = await provider_comfyui.run()
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
