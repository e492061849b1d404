#!/usr/bin/env python3
"""Writes a large mcptap journal for measuring the offline commands (docs/benchmarks.md, Files):
N MCP calls (tools/call with a JSON result of BODY bytes), one every STEP µs (1000), each 5 ms long,
as a cleanly ended session. `mcptap export` of it gives the same session as a HAR file.

usage: scripts/big-session.py OUT.jsonl [N=40000] [BODY=3000] [STEP=1000]
"""
import json
import sys

out, n, body = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40000, \
    int(sys.argv[3]) if len(sys.argv) > 3 else 3000
step = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
t0 = 1_764_000_000_000_000
auth = "Bearer [redacted sha256:0123456789abcdef len=40]"
with open(out, "w") as f:
    f.write(json.dumps({"type": "session", "version": 1, "created": t0, "mcptap": "0.1.0",
                        "raw_secrets": False, "argv": ["mcptap", "proxy"], "mode": "regular"}) + "\n")
    for i in range(1, n + 1):
        start = t0 + i * step
        req = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                          "params": {"name": "search", "arguments": {"q": f"query {i}"}}})
        text = ("lorem ipsum %d " % i) * (body // 16)
        resp = json.dumps({"jsonrpc": "2.0", "id": i,
                           "result": {"content": [{"type": "text", "text": text[:body]}]}})
        flow = {
            "id": i, "kind": "http", "state": "completed", "client_addr": "127.0.0.1:50000",
            "host": "mcp.example.com", "port": 443,
            "request": {"method": "POST", "url": "https://mcp.example.com/mcp", "version": "HTTP/1.1",
                        "headers": [{"name": "content-type", "value": "application/json"},
                                    {"name": "accept", "value": "application/json, text/event-stream"},
                                    {"name": "authorization", "value": auth},
                                    {"name": "mcp-session-id", "value": "s-1"}],
                        "body": {"text": req, "total_len": len(req), "state": "complete"}},
            "timings": {"started": start, "response_head": start + 4000, "finished": start + 5000},
            "response": {"status": 200, "version": "HTTP/1.1",
                         "headers": [{"name": "content-type", "value": "application/json"}],
                         "body": {"text": resp, "total_len": len(resp), "state": "complete"}},
        }
        f.write(json.dumps({"type": "completed", "flow": flow}, separators=(",", ":")) + "\n")
    f.write(json.dumps({"type": "end", "at": t0 + (n + 10) * step, "flows": n}) + "\n")
