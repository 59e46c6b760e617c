//! What the server offers, by name: tools, resources (and templates), prompts, completion.
//!
//! Each registry keeps its entries in registration order (lists page through them in that
//! order) and replaces an entry registered again under the same name. Registries can change
//! while the server runs: they sit behind a `std::sync::RwLock` that is held only to copy an
//! entry or a page out, never while a handler runs.

pub mod completion;
pub mod prompts;
pub mod resources;
pub mod tools;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use mcp_protocol::ErrorObject;

/// A boxed, sendable future, as handlers are stored (`BoxFuture<'static, T>`): mcp-protocol's.
pub use mcp_protocol::BoxFuture;

/// Entries in registration order, unique by key.
#[derive(Debug)]
pub(crate) struct Ordered<E> {
    entries: RwLock<Vec<(String, E)>>,
}

impl<E> Default for Ordered<E> {
    fn default() -> Self {
        Ordered {
            entries: RwLock::new(Vec::new()),
        }
    }
}

impl<E: Clone> Ordered<E> {
    fn read(&self) -> RwLockReadGuard<'_, Vec<(String, E)>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vec<(String, E)>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an entry, replacing one with the same key in place; true if it replaced one.
    pub(crate) fn insert(&self, key: String, entry: E) -> bool {
        let mut entries = self.write();
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => {
                slot.1 = entry;
                true
            }
            None => {
                entries.push((key, entry));
                false
            }
        }
    }

    /// Removes the entry with this key; true if there was one.
    pub(crate) fn remove(&self, key: &str) -> bool {
        let mut entries = self.write();
        let before = entries.len();
        entries.retain(|(k, _)| k != key);
        entries.len() != before
    }

    /// A copy of the entry with this key.
    pub(crate) fn get(&self, key: &str) -> Option<E> {
        self.read()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, e)| e.clone())
    }

    /// A copy of the first entry `pick` accepts, with what it returned.
    pub(crate) fn find_map<T>(&self, pick: impl Fn(&E) -> Option<T>) -> Option<(E, T)> {
        self.read()
            .iter()
            .find_map(|(_, e)| pick(e).map(|t| (e.clone(), t)))
    }

    /// How many entries there are.
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    /// One page of `view(entry)` from `cursor`, and the cursor of the next page.
    pub(crate) fn page<T>(
        &self,
        cursor: Option<&str>,
        page_size: usize,
        view: impl Fn(&E) -> T,
    ) -> Result<(Vec<T>, Option<String>), ErrorObject> {
        let entries = self.read();
        let (start, end, next) = page_bounds(entries.len(), cursor, page_size)?;
        let items = entries[start..end].iter().map(|(_, e)| view(e)).collect();
        Ok((items, next))
    }
}

/// Where a page starts and ends, and the next cursor. The cursor is opaque to clients; here it
/// is the decimal offset of the page's first item.
pub(crate) fn page_bounds(
    len: usize,
    cursor: Option<&str>,
    page_size: usize,
) -> Result<(usize, usize, Option<String>), ErrorObject> {
    let start = match cursor {
        None => 0,
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| ErrorObject::invalid_params(format!("invalid cursor {c:?}")))?,
    };
    let start = start.min(len);
    let end = start.saturating_add(page_size.max(1)).min(len);
    let next = (end < len).then(|| end.to_string());
    Ok((start, end, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_every_item_once() {
        let r: Ordered<u32> = Ordered::default();
        for i in 0..5 {
            r.insert(format!("k{i}"), i);
        }
        assert!(r.insert("k1".into(), 10));
        let mut cursor = None;
        let mut seen = Vec::new();
        loop {
            let (items, next) = r.page(cursor.as_deref(), 2, |e| *e).unwrap();
            seen.extend(items);
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, vec![0, 10, 2, 3, 4]);
        assert!(r.page(Some("x"), 2, |e| *e).is_err());
        assert!(r.remove("k0"));
        assert_eq!(r.len(), 4);
    }
}
