#!/usr/bin/env python3
"""An MCP client over stdio using the Python `mcp` SDK (2.3.x), for mcptap's tests of `mcptap mcp`.

    mcp_stdio_client.py CALLS.json -- COMMAND [ARGS...]

starts COMMAND as a stdio MCP server (the SDK's own stdio transport), lists its tools, makes
each call of CALLS.json (a list of {"tool": NAME, "arguments": {...}}) in order, and prints ONE
JSON object on stdout:

    {"protocol_version": ..., "server": {...}, "instructions": ...,
     "tools": [{"name", "description", "input_schema", "annotations"}],
     "results": [{"tool", "arguments", "is_error", "text"}]}

and exits 0 (1 with {"error": ...} when the connection itself fails). The environment the SDK
gives the server is its default (HOME, PATH, ...): pass what the server needs as arguments.
"""

from __future__ import annotations

import json
import sys
import traceback

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import TextContent


async def main(calls_path: str, command: list[str]) -> dict:
    with open(calls_path, encoding="utf-8") as f:
        calls = json.load(f)
    out: dict = {"results": []}
    params = StdioServerParameters(command=command[0], args=command[1:])
    with anyio.fail_after(300):
        async with Client(params) as client:
            out["protocol_version"] = client.protocol_version
            info = client.server_info
            out["server"] = info.model_dump(mode="json") if info is not None else None
            listed = await client.list_tools()
            out["tools"] = [
                {
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.input_schema,
                    "annotations": t.annotations.model_dump(mode="json", by_alias=True, exclude_none=True)
                    if t.annotations is not None
                    else None,
                }
                for t in listed.tools
            ]
            for call in calls:
                result = await client.call_tool(call["tool"], call.get("arguments") or {})
                texts = [b.text for b in result.content if isinstance(b, TextContent)]
                out["results"].append(
                    {
                        "tool": call["tool"],
                        "arguments": call.get("arguments") or {},
                        "is_error": bool(result.is_error),
                        "text": "\n".join(texts),
                    }
                )
    return out


if __name__ == "__main__":
    argv = sys.argv[1:]
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        print(json.dumps(anyio.run(main, argv[0], argv[2:])))
    except BaseException as e:  # noqa: BLE001 - report anything, the test prints it
        print(json.dumps({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}))
        sys.exit(1)
