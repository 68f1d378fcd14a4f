"""Thin adapters over hub.services: WebSocket JSON-RPC, HTTP shim, dashboard."""
