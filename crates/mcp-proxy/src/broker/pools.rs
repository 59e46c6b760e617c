//! Pools of registrations and how a message picks its member: sticky for sessionless
//! traffic, fewest outstanding requests for anything new.

use std::collections::HashMap;

use super::registration::Registration;

/// The registrations that share a name.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// Member session ids, in the order they joined.
    pub(crate) members: Vec<String>,
    /// The member that takes sessionless traffic while it lives.
    pub(crate) sticky: Option<String>,
}

impl Pool {
    /// The member with the fewest outstanding requests (the earliest on ties).
    pub(crate) fn least_loaded<'a>(
        &'a self,
        registrations: &HashMap<String, Registration>,
    ) -> Option<&'a String> {
        self.members
            .iter()
            .min_by_key(|m| registrations.get(*m).map_or(usize::MAX, |r| r.outstanding))
    }

    /// The member for sessionless traffic: the sticky one, or a new pick that becomes sticky.
    pub(crate) fn sticky_member(
        &mut self,
        registrations: &HashMap<String, Registration>,
    ) -> Option<String> {
        if let Some(s) = &self.sticky {
            if registrations.contains_key(s) {
                return Some(s.clone());
            }
        }
        let pick = self.least_loaded(registrations)?.clone();
        self.sticky = Some(pick.clone());
        Some(pick)
    }

    /// Removes a member (and its stickiness).
    pub(crate) fn remove(&mut self, id: &str) {
        self.members.retain(|m| m != id);
        if self.sticky.as_deref() == Some(id) {
            self.sticky = None;
        }
    }
}
