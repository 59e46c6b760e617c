//! Whole-workspace checks that no single crate can make: wire shapes shared by the seed and us.

use mcp_protocol::wire::{RegisterRequest, SessionIdKind};

#[test]
fn seed_register_body_is_a_legacy_registration() {
    let body: RegisterRequest =
        serde_json::from_str(r#"{"type":"mcp_server","timestamp":1234567890}"#).unwrap();
    assert!(!body.is_modern());
    assert_eq!(
        SessionIdKind::of("0123456789abcdef0123456789abcdef"),
        Some(SessionIdKind::Legacy)
    );
}
