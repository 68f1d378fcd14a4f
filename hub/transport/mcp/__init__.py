"""MCP: the tools (tools.py) served over stdio by ``beadhub mcp``
(stdio.py) and over Streamable HTTP at ``/mcp`` (endpoint.py)."""
