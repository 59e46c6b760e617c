//! An MCP client library and CLI for the seed's /message endpoint and Streamable HTTP.
