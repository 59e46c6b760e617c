//! Tests of the command line: flags, environment variables, defaults, refusals.

use super::*;
use clap::CommandFactory;

#[test]
fn cli_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn seed_style_port_and_flags() {
    let cli = Cli::try_parse_from(["mcp-proxy", "9100"]).unwrap();
    assert_eq!(cli.addr().unwrap(), "0.0.0.0:9100".parse().unwrap());
    let cli = Cli::try_parse_from(["mcp-proxy", "--port", "0", "--listen", "127.0.0.1"]).unwrap();
    assert_eq!(cli.addr().unwrap(), "127.0.0.1:0".parse().unwrap());
    let cli = Cli::try_parse_from(["mcp-proxy", "--listen", "127.0.0.1:7000"]).unwrap();
    assert_eq!(cli.addr().unwrap().port(), 7000);
    let cli =
        Cli::try_parse_from(["mcp-proxy", "--listen", "127.0.0.1:7000", "--port", "1"]).unwrap();
    assert!(cli.addr().is_err());
    assert!(Cli::try_parse_from(["mcp-proxy", "1", "--port", "2"]).is_err());
}

#[test]
fn tokens_from_flags_and_tls_needs_both_files() {
    use crate::auth::TokenKind;
    let cli = Cli::try_parse_from([
        "mcp-proxy",
        "--server-token",
        "ssssssssssssssssssss:alpha,beta",
        "--server-token",
        "tttttttttttttttttttt:*",
        "--client-token",
        "cccccccccccccccccccc",
    ])
    .unwrap();
    assert!(
        !format!("{cli:?}").contains("ssssssss"),
        "Debug hides tokens"
    );
    let auth = cli.try_config().unwrap().auth;
    assert_eq!(auth.count(TokenKind::Server), 2);
    assert_eq!(auth.count(TokenKind::Client), 1);
    let cli = Cli::try_parse_from(["mcp-proxy", "--client-token", "short"]).unwrap();
    assert!(cli.try_config().is_err());
    let open = Cli::try_parse_from(["mcp-proxy"])
        .unwrap()
        .try_config()
        .unwrap();
    assert!(!open.auth.enforced(TokenKind::Server) && !open.auth.enforced(TokenKind::Client));
    assert!(open.tls.is_none());
    assert!(Cli::try_parse_from(["mcp-proxy", "--tls-cert", "c.pem"]).is_err());
    let cli = Cli::try_parse_from([
        "mcp-proxy",
        "--tls-cert",
        "/nonexistent/c.pem",
        "--tls-key",
        "k.pem",
    ])
    .unwrap();
    assert!(cli
        .try_config()
        .unwrap_err()
        .to_string()
        .contains("/nonexistent/c.pem"));
}

#[test]
fn rates_must_be_finite_and_not_negative() {
    for flag in ["--rate-limit", "--server-rate-limit"] {
        for bad in ["NaN", "nan", "inf", "-1", "-0.5", "fast"] {
            // `--flag=-1`: clap would take a separate `-1` for a flag.
            let arg = format!("{flag}={bad}");
            let e = Cli::try_parse_from(["mcp-proxy", &arg]).unwrap_err();
            assert!(
                e.to_string().contains("requests per second"),
                "{flag} {bad}: {e}"
            );
        }
        for good in ["0", "1e-30", "2.5"] {
            assert!(
                Cli::try_parse_from(["mcp-proxy", flag, good]).is_ok(),
                "{flag} {good}"
            );
        }
    }
    let cli = Cli::try_parse_from(["mcp-proxy", "--rate-limit", "0"]).unwrap();
    assert_eq!(cli.config().client_rate.per_second, 0.0);
}

#[test]
fn defaults_match_the_config_defaults() {
    let cli = Cli::try_parse_from(["mcp-proxy"]).unwrap();
    let c = cli.config();
    let d = Config::default();
    assert_eq!(cli.addr().unwrap().port(), DEFAULT_PORT);
    assert_eq!(c.poll_timeout, d.poll_timeout);
    assert_eq!(c.max_poll_timeout, d.max_poll_timeout);
    assert_eq!(c.request_timeout, d.request_timeout);
    assert_eq!(c.expiry, d.expiry);
    assert_eq!(c.liveness_grace, d.liveness_grace);
    assert_eq!(c.max_body_bytes, 8 * 1024 * 1024);
    assert_eq!(c.sse_keep_alive, d.sse_keep_alive);
    assert_eq!(c.session_idle, d.session_idle);
    assert_eq!(c.max_sessions, d.max_sessions);
    assert_eq!(
        c.max_sessions_per_registration,
        d.max_sessions_per_registration
    );
    assert!(c.allowed_hosts.is_empty() && c.cors_origins.is_empty());
    let cli = Cli::try_parse_from([
        "mcp-proxy",
        "--allowed-hosts",
        "mcp.example.com,other:8443",
        "--cors-origins",
        "*",
    ])
    .unwrap();
    assert_eq!(
        cli.config().allowed_hosts,
        ["mcp.example.com", "other:8443"]
    );
    assert_eq!(cli.config().cors_origins, ["*"]);
    let cli = Cli::try_parse_from([
        "mcp-proxy",
        "--request-timeout",
        "0.5",
        "--body-limit",
        "10",
    ])
    .unwrap();
    assert_eq!(cli.config().request_timeout, Duration::from_millis(500));
    assert_eq!(cli.config().max_body_bytes, 10);
}

#[cfg(feature = "cluster")]
#[test]
fn the_broker_is_memory_or_a_redis_url_whose_password_never_shows() {
    let alone = Cli::try_parse_from(["mcp-proxy"]).unwrap();
    assert!(alone.config().cluster.is_none());
    let cli = Cli::try_parse_from([
        "mcp-proxy",
        "--broker",
        "redis://user:hunter2@10.0.0.5:6379/0",
        "--cluster-prefix",
        "team-a:",
        "--cluster-heartbeat",
        "0.5",
    ])
    .unwrap();
    let cluster = cli.config().cluster.unwrap();
    assert_eq!(cluster.url, "redis://user:hunter2@10.0.0.5:6379/0");
    assert_eq!(cluster.prefix, "team-a:");
    assert_eq!(cluster.heartbeat, Duration::from_millis(500));
    for shown in [format!("{cli:?}"), format!("{cluster:?}")] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("10.0.0.5:6379"), "{shown}");
    }
    for bad in [
        "http://10.0.0.5:6379",
        "10.0.0.5:6379",
        "redis://u:secret@",
        "http://u:secret@h:1",
    ] {
        let cli = Cli::try_parse_from(["mcp-proxy", "--broker", bad]).unwrap();
        let err = cli.try_config().unwrap_err().to_string();
        assert!(err.starts_with("--broker: "), "{bad}: {err}");
        assert!(!err.contains("secret"), "{err}");
    }
}

#[cfg(not(feature = "cluster"))]
#[test]
fn without_the_cluster_feature_a_redis_broker_is_refused_by_name() {
    let alone = Cli::try_parse_from(["mcp-proxy"]).unwrap();
    assert!(alone.try_config().unwrap().cluster.is_none());
    let cli =
        Cli::try_parse_from(["mcp-proxy", "--broker", "redis://u:secret@10.0.0.5:6379"]).unwrap();
    let err = cli.try_config().unwrap_err().to_string();
    assert!(err.starts_with("--broker: "), "{err}");
    assert!(err.contains("built without the `cluster` feature"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn oauth_flags() {
    let cli = Cli::try_parse_from([
        "mcp-proxy",
        "--public-url",
        "https://mcp.example.com",
        "--oauth-issuer",
        "https://id.example.com/realms/mcp",
        "--oauth-scopes",
        "mcp:tools",
        "--oauth-scopes",
        "files=files:read files/delete=files:admin",
        "--oauth-audience",
        "files=api://files",
    ])
    .unwrap();
    let config = cli.try_config().unwrap();
    let oauth = config.oauth.as_ref().unwrap().config();
    assert_eq!(oauth.issuer, "https://id.example.com/realms/mcp");
    assert_eq!(oauth.pool_scopes(""), ["mcp:tools"]);
    assert_eq!(oauth.pool_scopes("files"), ["files:read"]);
    assert_eq!(
        oauth.tool_call_scopes("files", "delete").unwrap(),
        ["files:read", "files:admin"]
    );
    assert_eq!(oauth.audiences("files"), ["api://files"]);
    assert!(
        crate::guard::Guard::new(&config, true).allows_host_for_tests("mcp.example.com"),
        "the public URL's host joins the allowed hosts"
    );
    // An issuer needs the public URL; http only on loopback; introspection needs credentials.
    assert!(Cli::try_parse_from(["mcp-proxy", "--oauth-issuer", "https://id.example"]).is_err());
    let http = Cli::try_parse_from([
        "mcp-proxy",
        "--public-url",
        "https://mcp.example.com",
        "--oauth-issuer",
        "http://id.example.com",
    ])
    .unwrap();
    assert!(http.try_config().is_err());
    assert!(Cli::try_parse_from([
        "mcp-proxy",
        "--public-url",
        "https://mcp.example.com",
        "--oauth-issuer",
        "https://id.example.com",
        "--oauth-introspection",
        "issuer",
    ])
    .is_err());
    let introspecting = Cli::try_parse_from([
        "mcp-proxy",
        "--public-url",
        "https://mcp.example.com",
        "--oauth-issuer",
        "https://id.example.com",
        "--oauth-introspection",
        "issuer",
        "--oauth-client-id",
        "proxy",
        "--oauth-client-secret",
        "very-secret",
    ])
    .unwrap();
    assert!(!format!("{introspecting:?}").contains("very-secret"));
    let config = introspecting.try_config().unwrap();
    let oauth = config.oauth.unwrap();
    assert!(oauth
        .config()
        .introspection
        .as_ref()
        .unwrap()
        .endpoint
        .is_none());
    assert!(!format!("{oauth:?}").contains("very-secret"));
}

#[test]
fn the_console_needs_a_password_that_never_shows() {
    let cli = Cli::try_parse_from(["mcp-proxy", "--console"]).unwrap();
    let e = cli.try_config().unwrap_err().to_string();
    assert!(e.contains("--console-password"), "{e}");
    let secret = "console-password-98765";
    let cli =
        Cli::try_parse_from(["mcp-proxy", "--console", "--console-password", "short"]).unwrap();
    let e = cli.try_config().unwrap_err().to_string();
    assert!(e.contains("12 characters") && !e.contains("short"), "{e}");
    let cli =
        Cli::try_parse_from(["mcp-proxy", "--console", "--console-password", secret]).unwrap();
    assert!(
        !format!("{cli:?}").contains(secret),
        "Debug hides the password"
    );
    let config = cli.try_config().unwrap();
    assert!(!format!("{config:?}").contains(secret));
    assert!(config.console.is_some());

    let dir = std::env::temp_dir().join(format!("mcp-proxy-cli-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("password");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let cli = Cli::try_parse_from([
        "mcp-proxy",
        "--console",
        "--console-password-file",
        file.to_str().unwrap(),
    ])
    .unwrap();
    assert!(cli.try_config().unwrap().console.is_some());
    // Off by default, and no audit log either.
    let config = Cli::try_parse_from(["mcp-proxy"])
        .unwrap()
        .try_config()
        .unwrap();
    assert!(config.console.is_none() && config.audit.log.is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_audit_log_is_opened_at_start_and_payloads_are_opt_in() {
    let dir = std::env::temp_dir().join(format!("mcp-proxy-cli-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.log");
    let cli = Cli::try_parse_from(["mcp-proxy", "--audit-log", path.to_str().unwrap()]).unwrap();
    let config = cli.try_config().unwrap();
    assert!(config.audit.log.is_some() && path.exists());
    assert_eq!(config.audit.payloads, None);
    let cli = Cli::try_parse_from([
        "mcp-proxy",
        "--audit-payloads",
        "--audit-payload-cap",
        "100",
    ])
    .unwrap();
    assert_eq!(cli.config().audit.payloads, Some(100));
    let missing = dir.join("no/such/dir/audit.log");
    let cli = Cli::try_parse_from(["mcp-proxy", "--audit-log", missing.to_str().unwrap()]).unwrap();
    let e = cli.try_config().unwrap_err().to_string();
    assert!(e.starts_with("--audit-log"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn builtin_authorization_server_flags() {
    let dir = std::env::temp_dir().join(format!("mcp-proxy-cli-as-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("oauth.json");
    let state_arg = state.to_str().unwrap();
    let base = [
        "mcp-proxy",
        "--public-url",
        "https://mcp.example.com",
        "--oauth-issuer",
        "builtin",
        "--oauth-state",
        state_arg,
    ];
    let with = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        Cli::try_parse_from(args).unwrap().try_config()
    };
    let config = with(&["--oauth-passphrase", "a long enough passphrase"]).unwrap();
    let oauth = config.oauth.as_ref().unwrap().config();
    assert_eq!(
        oauth.issuer, "https://mcp.example.com",
        "its issuer is the public URL"
    );
    let server = config.auth_server.as_ref().unwrap();
    assert_eq!(server.issuer(), "https://mcp.example.com");
    // A public URL written with a trailing slash names the same issuer.
    let slashed: Vec<&str> = base
        .iter()
        .map(|a| {
            if *a == "https://mcp.example.com" {
                "https://mcp.example.com/"
            } else {
                a
            }
        })
        .chain(["--oauth-passphrase", "a long enough passphrase"])
        .collect();
    let config = Cli::try_parse_from(slashed).unwrap().try_config().unwrap();
    assert_eq!(
        config.oauth.as_ref().unwrap().config().issuer,
        "https://mcp.example.com"
    );
    assert_eq!(
        config.auth_server.as_ref().unwrap().issuer(),
        "https://mcp.example.com"
    );
    assert!(server.describe_store().contains("oauth.json"));
    // Exactly one way to sign in; no audience overrides; a short passphrase is refused.
    for bad in [
        &[][..],
        &["--oauth-passphrase", "short"][..],
        &[
            "--oauth-passphrase",
            "a long enough passphrase",
            "--oauth-users-file",
            "/nonexistent",
        ][..],
        &[
            "--oauth-passphrase",
            "a long enough passphrase",
            "--oauth-audience",
            "api://x",
        ][..],
    ] {
        let err = with(bad).unwrap_err().to_string();
        assert!(
            !err.contains("a long enough passphrase"),
            "never echoes it: {err}"
        );
    }
    // A state file that is not one is refused at start.
    std::fs::write(&state, "garbage").unwrap();
    assert!(with(&["--oauth-passphrase", "a long enough passphrase"]).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
