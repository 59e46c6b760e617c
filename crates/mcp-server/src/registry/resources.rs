//! Resources: static ones by URI, and families described by RFC 6570 URI templates.
//!
//! Template matching covers what resource templates use in practice: literal text and
//! `{name}` variables (one path segment: no `/`), plus `{+name}` and `{#name}` (may span `/`).
//! A request URI matches the first registered template that fits it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use mcp_protocol::mcp::resources::{Resource, ResourceContents, ResourceTemplate};
use mcp_protocol::ErrorObject;

use super::{BoxFuture, Ordered};
use crate::RequestContext;

/// What a resource handler returns: the contents, or a JSON-RPC error (e.g. -32002 not found).
pub type ResourceResult = Result<Vec<ResourceContents>, ErrorObject>;

/// A stored handler of a static resource: `(uri, ctx)`.
pub(crate) type ResourceHandler =
    Arc<dyn Fn(String, RequestContext) -> BoxFuture<'static, ResourceResult> + Send + Sync>;

/// A stored handler of a template: `(uri, variables, ctx)`.
pub(crate) type TemplateHandler = Arc<
    dyn Fn(String, BTreeMap<String, String>, RequestContext) -> BoxFuture<'static, ResourceResult>
        + Send
        + Sync,
>;

/// Boxes a static resource handler.
pub(crate) fn resource_handler<F, Fut>(handler: F) -> ResourceHandler
where
    F: Fn(String, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ResourceResult> + Send + 'static,
{
    Arc::new(move |uri, ctx| Box::pin(handler(uri, ctx)))
}

/// Boxes a template handler.
pub(crate) fn template_handler<F, Fut>(handler: F) -> TemplateHandler
where
    F: Fn(String, BTreeMap<String, String>, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ResourceResult> + Send + 'static,
{
    Arc::new(move |uri, vars, ctx| Box::pin(handler(uri, vars, ctx)))
}

/// A registered static resource.
#[derive(Clone)]
pub(crate) struct ResourceEntry {
    pub(crate) resource: Resource,
    pub(crate) handler: ResourceHandler,
}

/// A registered resource template.
#[derive(Clone)]
pub(crate) struct TemplateEntry {
    pub(crate) template: ResourceTemplate,
    pub(crate) pattern: Arc<UriTemplate>,
    pub(crate) handler: TemplateHandler,
}

/// Static resources by URI.
pub(crate) type ResourceRegistry = Ordered<ResourceEntry>;
/// Templates by URI template.
pub(crate) type TemplateRegistry = Ordered<TemplateEntry>;

/// A parsed URI template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UriTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var { name: String, spans_slashes: bool },
}

impl UriTemplate {
    /// Parses a template; an unclosed `{` is read as literal text.
    pub(crate) fn parse(template: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let expr = &rest[open + 1..close];
            let (spans_slashes, name) = match expr.chars().next() {
                Some('+' | '#') => (true, &expr[1..]),
                _ => (false, expr),
            };
            parts.push(Part::Var {
                name: name.to_owned(),
                spans_slashes,
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        UriTemplate { parts }
    }

    /// The variables if `uri` fits the template.
    pub(crate) fn matches(&self, uri: &str) -> Option<BTreeMap<String, String>> {
        let mut vars = BTreeMap::new();
        match_parts(&self.parts, uri, &mut vars).then_some(vars)
    }
}

fn match_parts(parts: &[Part], uri: &str, vars: &mut BTreeMap<String, String>) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return uri.is_empty();
    };
    match first {
        Part::Literal(lit) => uri
            .strip_prefix(lit.as_str())
            .is_some_and(|tail| match_parts(rest, tail, vars)),
        Part::Var {
            name,
            spans_slashes,
        } => {
            // Try every non-empty value, shortest first, that the rest of the template accepts.
            for (end, c) in uri.char_indices().map(|(i, c)| (i + c.len_utf8(), c)) {
                if c == '/' && !spans_slashes {
                    break;
                }
                if match_parts(rest, &uri[end..], vars) {
                    vars.insert(name.clone(), uri[..end].to_owned());
                    return true;
                }
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn templates_match_segments_and_spans() {
        let t = UriTemplate::parse("weather://{city}/today");
        assert_eq!(
            t.matches("weather://paris/today"),
            vars(&[("city", "paris")])
        );
        assert_eq!(t.matches("weather://a/b/today"), None);
        assert_eq!(t.matches("weather:///today"), None);

        let t = UriTemplate::parse("file:///{+path}");
        assert_eq!(
            t.matches("file:///etc/hosts"),
            vars(&[("path", "etc/hosts")])
        );

        let t = UriTemplate::parse("db://{table}/{id}");
        assert_eq!(
            t.matches("db://users/42"),
            vars(&[("table", "users"), ("id", "42")])
        );
        assert_eq!(t.matches("db://users/"), None);
        assert_eq!(
            UriTemplate::parse("x://fixed").matches("x://fixed"),
            vars(&[])
        );
    }
}
