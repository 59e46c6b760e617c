//! The public MCP reverse proxy: MCP servers connect out to it by long polling; clients talk to it as if it were the server.
