//! What may be logged of secrets: registration and client session ids are credentials (the
//! proxy's only handle on a registration), so logs carry a short prefix, and reqwest errors
//! (whose text names the URL, the poll's `session_id` query included) are logged and returned
//! without their URL.

/// How many characters of an id reach a log line.
pub(crate) const ID_PREFIX_CHARS: usize = 8;

/// The first [`ID_PREFIX_CHARS`] characters of an id, for logs.
pub(crate) fn short_id(id: &str) -> &str {
    match id.char_indices().nth(ID_PREFIX_CHARS) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// A reqwest error without the URL it names.
pub(crate) fn http_error(error: reqwest::Error) -> reqwest::Error {
    error.without_url()
}

/// A reqwest error as text for logs and error messages: what failed and why (the chain of
/// its sources, where the cause is: "Connection refused"), without the URL it names.
pub(crate) fn http_cause(error: reqwest::Error) -> String {
    let error = http_error(error);
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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

    #[tokio::test]
    async fn a_reqwest_error_loses_its_url_and_session_id() {
        // Nothing listens on port 1 of loopback: the request fails before any answer.
        let url = "http://127.0.0.1:1/poll?session_id=reg-secret-0123456789&timeout=30";
        let error = reqwest::get(url).await.expect_err("nothing listens there");
        assert!(
            error.to_string().contains("reg-secret-0123456789"),
            "{error}"
        );
        let cause = http_cause(error);
        let error = http_error(reqwest::get(url).await.expect_err("nothing listens there"));
        let shown = format!("{error} / {error:?} / {cause}");
        assert!(!shown.contains("reg-secret"), "{shown}");
        assert!(!shown.contains("session_id"), "{shown}");
        assert!(
            cause.to_lowercase().contains("refused"),
            "the cause is kept: {cause}"
        );
    }
}
