//! The OAuth flags (`--public-url`, `--oauth-*`) into an [`OAuthConfig`].

use super::Cli;
use crate::auth::oauth::OAuthConfig;
use crate::Error;

impl Cli {
    /// The OAuth resource server's settings, when --oauth-issuer is given.
    pub fn oauth_config(&self) -> Result<Option<OAuthConfig>, Error> {
        let Some(issuer) = &self.oauth_issuer else {
            return Ok(None);
        };
        let public_url = self.public_url.as_deref().ok_or(Error::InvalidConfig {
            flag: "--oauth-issuer",
            reason: "needs --public-url".into(),
        })?;
        let mut config = OAuthConfig::new(public_url, issuer)?;
        for spec in self.oauth_scopes.iter().filter(|s| !s.trim().is_empty()) {
            config.add_scopes(spec)?;
        }
        for spec in self.oauth_audiences.iter().filter(|s| !s.trim().is_empty()) {
            config.add_audience(spec)?;
        }
        if let Some(endpoint) = &self.oauth_introspection {
            let endpoint = (endpoint != "issuer").then_some(endpoint.as_str());
            config.set_introspection(
                endpoint,
                self.oauth_client_id.clone().unwrap_or_default(),
                self.oauth_client_secret
                    .clone()
                    .map(|s| s.0)
                    .unwrap_or_default(),
            )?;
        }
        Ok(Some(config))
    }
}
