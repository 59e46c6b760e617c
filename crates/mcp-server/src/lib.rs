//! Write MCP servers: tool, resource and prompt registries, request processing and per-client sessions.
