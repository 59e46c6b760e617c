//! Waiting for the process to be asked to stop (feature `signal`): the one Ctrl-C/SIGTERM wait
//! behind every binary of the workspace (`mcp-proxy`, `mcp-reverse`, the examples), so they all
//! stop the same way. Binaries make one root `CancellationToken` and cancel it when
//! [`shutdown_signal`] resolves.
//!
//! It lives in this crate, the lowest every binary depends on, behind a feature because it
//! needs tokio: without `signal` this crate stays free of any async runtime.

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT), or SIGTERM on Unix (what
/// `kill`, systemd and container runtimes send).
///
/// A signal whose handler cannot be installed is logged and never fires, so the other one can
/// still stop the process: waiting on, rather than stopping at once, is the safe failure.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::shutdown_signal;

    #[tokio::test]
    async fn sigterm_resolves_it() {
        let mut wait = std::pin::pin!(shutdown_signal());
        // A timeout of zero polls the future once, which installs both handlers, so the SIGTERM
        // below is caught (it would otherwise end the test process) and no sleep is needed.
        assert!(tokio::time::timeout(Duration::ZERO, &mut wait)
            .await
            .is_err());
        let sent = std::process::Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", std::process::id())])
            .status()
            .expect("sh runs");
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("SIGTERM resolves shutdown_signal");
    }
}
