//! Phase 1 of `cargo xtask oauth`: a real identity provider (npm `oidc-provider`) on
//! loopback, mcp-proxy with `--oauth-issuer` naming it, and the SDK clients: each gets a 401
//! and the pool's resource metadata, registers itself at the provider (RFC 7591), completes
//! authorization code + PKCE with the pool's resource indicator (the provider's login and
//! consent forms answered by plain form posts), calls `whoami` and `echo` through the proxy
//! (the server learns who calls, never the token), and sees its token for `alpha` refused on
//! `beta`.

use crate::procs::{self, listening_url, Proc};

use super::{run_client, Runtimes, Sdk, SCOPE, START};

/// PASS lines each client script prints when every check holds.
fn checks(sdk: Sdk) -> usize {
    match sdk {
        Sdk::TypeScript => 6,
        Sdk::Python => 4,
    }
}

/// Runs the phase, recording each step in `results`.
pub(super) fn run(runtimes: &Runtimes, results: &mut Vec<bool>) {
    // The processes live until the end of this function: dropping a Proc kills it.
    let Some((_stack, proxy_url)) = procs::timed(
        "start oidc-provider, mcp-proxy --oauth-issuer and two pools",
        results,
        || start_stack(runtimes),
    ) else {
        return;
    };
    for sdk in runtimes.sdks() {
        let (program, script) = runtimes.client(sdk, "oauth");
        let what = match sdk {
            Sdk::TypeScript => format!("typescript (@modelcontextprotocol/sdk@{})", super::TS_SDK),
            Sdk::Python => "python (mcp)".to_owned(),
        };
        procs::timed(
            &format!("{what} authorizes at oidc-provider and calls through {proxy_url}"),
            results,
            || run_client(sdk.name(), &program, &script, &[&proxy_url], checks(sdk)),
        );
    }
}

/// Starts the identity provider, the proxy in front of it (its public URL is its own loopback
/// address, so its port is chosen first) and a reverse server in each of two pools.
fn start_stack(runtimes: &Runtimes) -> Result<(Vec<Proc>, String), String> {
    let idp_script = runtimes.dir.join("idp.mjs");
    let mut idp = Proc::spawn(
        "oidc-provider",
        &runtimes.node,
        &[idp_script.to_str().ok_or("non-UTF-8 path")?, SCOPE],
    )?;
    let issuer = idp.wait_for_line(START, |l| {
        l.strip_prefix("IDP_URL ").map(|u| u.trim().to_owned())
    })?;
    let port = crate::infra::free_port()?.to_string();
    let public = format!("http://127.0.0.1:{port}");
    let mut proxy = Proc::spawn(
        "mcp-proxy",
        &procs::binary("mcp-proxy"),
        &[
            "--listen",
            "127.0.0.1",
            "--port",
            &port,
            "--public-url",
            &public,
            "--oauth-issuer",
            &issuer,
            "--oauth-scopes",
            SCOPE,
        ],
    )?;
    let url = proxy.wait_for_line(START, listening_url)?;
    let mut procs = vec![idp, proxy];
    procs.extend(super::start_pools(&url)?);
    procs::wait_registrations(&url, 2, START)?;
    Ok((procs, url))
}
