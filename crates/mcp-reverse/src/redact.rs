//! What may be logged of secrets: registration and client session ids are credentials (the
//! proxy's only handle on a registration), so logs carry a short prefix.

/// How many characters of an id reach a log line.
pub(crate) const ID_PREFIX_CHARS: usize = 8;

/// The first [`ID_PREFIX_CHARS`] characters of an id, for logs.
pub(crate) fn short_id(id: &str) -> &str {
    match id.char_indices().nth(ID_PREFIX_CHARS) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_stop_at_a_character_boundary() {
        assert_eq!(short_id("0123456789abcdef"), "01234567");
        assert_eq!(short_id("éééééééééé"), "éééééééé");
        assert_eq!(short_id("abc"), "abc");
    }
}
