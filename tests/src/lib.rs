//! Cross-crate integration tests live in `tests/tests/`; this library holds their shared helpers,
//! and compiles the README's Rust example as a doctest so the README cannot drift from the API.

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
