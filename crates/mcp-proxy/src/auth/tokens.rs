//! Token sets: parsing flags and the token file, and the constant-time lookup.
//!
//! A token is never kept in plain text: each is stored as its SHA-256 digest, and a presented
//! token is hashed and compared with every stored digest of its kind, in constant time and
//! without stopping at the first match. Hashing first makes every comparison 32 bytes against
//! 32 bytes, so neither a token's length nor how much of a prefix matched shows in the timing,
//! and a memory dump or a `{:?}` of the configuration shows no secret.

use std::fmt;
use std::sync::Arc;

use mcp_protocol::wire::is_valid_pool_name;
use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

use crate::Error;

/// How the default pool (`/message`, `/mcp`, registrations without `name`) is spelled in a
/// token's names. `@` cannot occur in a pool name, so it cannot clash with a real one.
pub const DEFAULT_POOL_NAME: &str = "@default";

/// The shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Which routes a token opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Reverse clients: `/register`, `/poll`, `/response`.
    Server,
    /// MCP clients: `/message`, `/mcp` and their `/servers/{name}/...` forms.
    Client,
}

impl TokenKind {
    /// `server` or `client`, as in the token file.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Server => "server",
            TokenKind::Client => "client",
        }
    }
}

/// The pools a token reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Names {
    /// Every pool (written `*`): explicit, never a default.
    Any,
    /// These pools only; `""` is the default pool (written `@default`).
    Only(Vec<String>),
}

impl Names {
    /// Whether the pool `pool` (`""` = the default pool) is reachable.
    pub fn allows(&self, pool: &str) -> bool {
        match self {
            Names::Any => true,
            Names::Only(names) => names.iter().any(|n| n == pool),
        }
    }

    /// Parses `*`, or `NAME[,NAME...]` where a name is a pool name or `@default`.
    fn parse(text: &str) -> Result<Names, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Names::Any);
        }
        let mut names = Vec::new();
        for name in text.split(',').map(str::trim) {
            if name == "*" {
                return Err("`*` must stand alone".into());
            }
            if name == DEFAULT_POOL_NAME {
                names.push(String::new());
            } else if is_valid_pool_name(name) {
                names.push(name.to_owned());
            } else {
                return Err(format!(
                    "`{name}` is not a pool name ([A-Za-z0-9._-]{{1,64}}), `{DEFAULT_POOL_NAME}` or `*`"
                ));
            }
        }
        Ok(Names::Only(names))
    }
}

/// A token's identity: the SHA-256 digest of the token, never the token itself.
///
/// A registration remembers the identity it registered with; equality is constant-time.
#[derive(Clone, Copy)]
pub struct TokenId([u8; 32]);

impl TokenId {
    /// The identity of `token`.
    pub fn of(token: &str) -> Self {
        let mut id = [0u8; 32];
        id.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        TokenId(id)
    }

    /// The whole digest in hex: a key for state shared with other instances (the digest of a
    /// high-entropy token reveals nothing of it).
    pub(crate) fn digest_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The identity whose [`TokenId::digest_hex`] is `hex`; `None` for anything else.
    #[cfg(feature = "cluster")]
    pub(crate) fn from_digest_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut id = [0u8; 32];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(TokenId(id))
    }

    /// A short fingerprint for logs (4 bytes of the digest: names the token, reveals nothing).
    pub fn fingerprint(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl PartialEq for TokenId {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TokenId {}

/// Hashes the digest (for maps keyed by token, e.g. the rate limiter's buckets); the digest
/// is already uniformly distributed and is not the token.
impl std::hash::Hash for TokenId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({}…)", self.fingerprint())
    }
}

/// What a valid token grants; the auth layer puts it in the request's extensions.
#[derive(Clone, Debug)]
pub struct Grant {
    /// Which token it was.
    pub id: TokenId,
    /// The pools it reaches.
    pub names: Arc<Names>,
}

/// One configured token.
#[derive(Clone, Debug)]
struct Entry {
    kind: TokenKind,
    id: TokenId,
    names: Arc<Names>,
}

/// The tokens of both kinds from one source (flags and environment, or the token file).
#[derive(Clone, Debug, Default)]
pub struct TokenSet {
    entries: Vec<Entry>,
}

impl TokenSet {
    /// An empty set.
    pub fn new() -> Self {
        TokenSet::default()
    }

    /// Adds `TOKEN[:NAMES]` (a flag's or the environment's form); without names the token
    /// reaches the default pool only. `origin` names the source in errors (`--server-token`).
    pub fn add_spec(&mut self, kind: TokenKind, spec: &str, origin: &str) -> Result<(), Error> {
        let (token, names) = match spec.trim().split_once(':') {
            Some((t, n)) => (t, Names::parse(n)),
            None => (spec.trim(), Ok(Names::Only(vec![String::new()]))),
        };
        let bad = |reason: String| Error::TokenConfig {
            origin: origin.to_owned(),
            line: None,
            reason,
        };
        let names = names.map_err(bad)?;
        self.push(kind, token, names).map_err(bad)
    }

    /// Parses a token file: one token per line, `KIND TOKEN [NAMES]`, where KIND is `server`
    /// or `client` and NAMES is `*` or `NAME[,NAME...]` (`@default` for the default pool;
    /// absent = `@default`). `#` starts a comment; blank lines are skipped.
    pub fn parse_file(text: &str, origin: &str) -> Result<TokenSet, Error> {
        let mut set = TokenSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = match line.find('#') {
                Some(i) => &line[..i],
                None => line,
            };
            let mut fields = line.split_whitespace();
            let Some(kind) = fields.next() else { continue };
            let bad = |reason: String| Error::TokenConfig {
                origin: origin.to_owned(),
                line: Some(n + 1),
                reason,
            };
            let kind = match kind {
                "server" => TokenKind::Server,
                "client" => TokenKind::Client,
                _ => return Err(bad("the first field must be `server` or `client`".into())),
            };
            let token = fields
                .next()
                .ok_or_else(|| bad("a token must follow the kind".into()))?;
            let names = match fields.next() {
                Some(names) => Names::parse(names).map_err(bad)?,
                None => Names::Only(vec![String::new()]),
            };
            if fields.next().is_some() {
                return Err(bad(
                    "too many fields (names are comma-separated, without spaces)".into(),
                ));
            }
            set.push(kind, token, names).map_err(bad)?;
        }
        Ok(set)
    }

    fn push(&mut self, kind: TokenKind, token: &str, names: Names) -> Result<(), String> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "a token must have at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"
            ));
        }
        // RFC 6750's b64token characters: they survive a header unchanged, and `:`, `,`,
        // `#` and spaces stay free as separators.
        let valid = token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
        if !valid {
            return Err("a token may contain only A-Z a-z 0-9 - . _ ~ + / =".into());
        }
        let id = TokenId::of(token);
        if self.entries.iter().any(|e| e.kind == kind && e.id == id) {
            return Err(format!("the same {} token is given twice", kind.as_str()));
        }
        self.entries.push(Entry {
            kind,
            id,
            names: Arc::new(names),
        });
        Ok(())
    }

    /// Both sets' tokens (a token in both keeps the names of the first).
    pub fn merged(&self, other: &TokenSet) -> TokenSet {
        let mut entries = self.entries.clone();
        for e in &other.entries {
            if !entries.iter().any(|x| x.kind == e.kind && x.id == e.id) {
                entries.push(e.clone());
            }
        }
        TokenSet { entries }
    }

    /// How many tokens of `kind` there are.
    pub fn count(&self, kind: TokenKind) -> usize {
        self.entries.iter().filter(|e| e.kind == kind).count()
    }

    /// The grant of `presented` as a token of `kind`, if it is one.
    ///
    /// Every stored digest of the kind is compared, with no early exit, so the time taken
    /// does not depend on which token matched or on how close a wrong one came.
    pub fn lookup(&self, kind: TokenKind, presented: &str) -> Option<Grant> {
        let id = TokenId::of(presented);
        let mut hit = None;
        for e in self.entries.iter().filter(|e| e.kind == kind) {
            if e.id == id {
                hit = Some(Grant {
                    id,
                    names: e.names.clone(),
                });
            }
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn file_format() {
        let text = format!(
            "# kind token names\n\nserver {A} alpha,beta   # two pools\nclient {B} *\nclient {A}\n"
        );
        let set = TokenSet::parse_file(&text, "f").unwrap();
        assert_eq!(set.count(TokenKind::Server), 1);
        assert_eq!(set.count(TokenKind::Client), 2);
        let g = set.lookup(TokenKind::Server, A).unwrap();
        assert!(g.names.allows("alpha") && g.names.allows("beta") && !g.names.allows(""));
        assert!(
            set.lookup(TokenKind::Server, B).is_none(),
            "kinds are separate"
        );
        assert_eq!(*set.lookup(TokenKind::Client, B).unwrap().names, Names::Any);
        let default_only = set.lookup(TokenKind::Client, A).unwrap();
        assert!(default_only.names.allows("") && !default_only.names.allows("alpha"));
        assert!(set
            .lookup(TokenKind::Client, "aaaaaaaaaaaaaaaaaaa")
            .is_none());
    }

    #[test]
    fn file_errors_name_the_line_and_never_the_token() {
        for (text, line) in [
            (format!("server {A}\nnobody {B}\n"), 2),
            ("client short\n".to_owned(), 1),
            (format!("client {A} alpha beta\n"), 1),
            (format!("client {A} alpha,*\n"), 1),
            (format!("client {A} bad/name\n"), 1),
            (format!("\nserver {A}\nserver {A} *\n"), 3),
            ("server\n".to_owned(), 1),
            ("client abcdefghijklmnopq!\n".to_owned(), 1),
        ] {
            let e = TokenSet::parse_file(&text, "tokens.txt").unwrap_err();
            let Error::TokenConfig { line: l, .. } = &e else {
                panic!("{e:?}")
            };
            assert_eq!(*l, Some(line), "{text:?}: {e}");
            let shown = e.to_string();
            assert!(!shown.contains(A) && !shown.contains(B), "{shown}");
        }
    }

    #[test]
    fn flag_specs() {
        let mut set = TokenSet::new();
        set.add_spec(
            TokenKind::Server,
            &format!("{A}:alpha,@default"),
            "--server-token",
        )
        .unwrap();
        set.add_spec(TokenKind::Client, B, "--client-token")
            .unwrap();
        let g = set.lookup(TokenKind::Server, A).unwrap();
        assert!(g.names.allows("alpha") && g.names.allows(""));
        assert_eq!(
            *set.lookup(TokenKind::Client, B).unwrap().names,
            Names::Only(vec![String::new()])
        );
        assert!(set
            .add_spec(TokenKind::Client, &format!("{A}:"), "--client-token")
            .is_err());
        assert!(set
            .add_spec(TokenKind::Client, "x:*", "--client-token")
            .is_err());
    }

    #[test]
    fn ids_compare_by_value_and_hide_the_token() {
        assert_eq!(TokenId::of(A), TokenId::of(A));
        assert_ne!(TokenId::of(A), TokenId::of(B));
        let shown = format!(
            "{:?}",
            TokenSet::parse_file(&format!("server {A}"), "f").unwrap()
        );
        assert!(!shown.contains(A), "{shown}");
    }
}
