//! Header lists that keep order, duplicates and the original spelling of names.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One header field. Values that are not UTF-8 are kept lossily (U+FFFD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Field name as received (HTTP/2 names are lower case).
    pub name: String,
    /// Field value.
    pub value: String,
}

/// Header fields in the order they were received.
///
/// The list is shared: cloning a flow's headers (the engine announces a request, then finishes
/// it) costs a reference count, and changing a shared list copies it first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Headers(Arc<Vec<Header>>);

impl Headers {
    /// An empty list.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Appends a field.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        Arc::make_mut(&mut self.0).push(Header {
            name: name.into(),
            value: value.into(),
        });
    }

    /// Iterates over the fields, mutably (copies a shared list first).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Header> {
        Arc::make_mut(&mut self.0).iter_mut()
    }

    /// The fields as a slice.
    pub fn as_slice(&self) -> &[Header] {
        &self.0
    }

    /// Replaces the value of the field at `index` (copies a shared list first).
    pub fn set_value(&mut self, index: usize, value: String) {
        if let Some(h) = Arc::make_mut(&mut self.0).get_mut(index) {
            h.value = value;
        }
    }

    /// Keeps the fields for which `keep` returns true.
    pub fn retain(&mut self, keep: impl FnMut(&Header) -> bool) {
        Arc::make_mut(&mut self.0).retain(keep);
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// True if `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Iterates over the fields.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers(Arc::new(
            iter.into_iter()
                .map(|(n, v)| Header {
                    name: n.into(),
                    value: v.into(),
                })
                .collect(),
        ))
    }
}

impl From<Vec<Header>> for Headers {
    fn from(v: Vec<Header>) -> Self {
        Headers(Arc::new(v))
    }
}
