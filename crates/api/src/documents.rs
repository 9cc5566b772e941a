//! Parsed GraphQL documents, kept by query text.
//!
//! Clients send the same few query strings over and over; parsing one (async-graphql's pest
//! parser) took 8% of the API's CPU per `reportStatus`. A request whose query text was seen
//! recently gets a copy of the parsed document instead. Everything after parsing still runs on
//! every request: the operation guard (its `parse_query` hook receives the cached document),
//! async-graphql's validation with the request's variables, and the complexity limit.

use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};

use async_graphql::parser::types::ExecutableDocument;
use lru::LruCache;

/// Documents kept. Our clients send a handful of distinct queries; a client sending ever new
/// ones only evicts the others, each of its requests parsed as without a cache.
pub const CAPACITY: NonZeroUsize = NonZeroUsize::new(128).unwrap();

/// Longest query text kept (our longest, the standard introspection query, has 1.4 KiB): a
/// parsed document takes several times its text, so this bounds the cache's memory.
pub const MAX_QUERY_BYTES: usize = 4 * 1024;

/// A bounded LRU of parsed documents by query text.
pub struct DocumentCache {
    documents: Mutex<LruCache<String, ExecutableDocument>>,
}

impl Default for DocumentCache {
    fn default() -> Self {
        Self {
            documents: Mutex::new(LruCache::new(CAPACITY)),
        }
    }
}

impl DocumentCache {
    /// The request with its parsed document attached, from the cache or parsed now. A query
    /// that does not parse is left as it is: async-graphql reports the syntax error as usual.
    pub fn attach(&self, mut request: async_graphql::Request) -> async_graphql::Request {
        if request.query.len() > MAX_QUERY_BYTES {
            return request;
        }
        let cached = self.lock().get(&request.query).cloned();
        let document = match cached {
            Some(document) => document,
            None => match async_graphql::parser::parse_query(&request.query) {
                Ok(document) => {
                    self.lock().put(request.query.clone(), document.clone());
                    document
                }
                Err(_) => return request,
            },
        };
        request.set_parsed_query(document);
        request
    }

    /// How many documents are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, ExecutableDocument>> {
        // The cache holds no invariant a panicking holder could break.
        self.documents.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_parsed_once_and_its_document_reused() {
        let cache = DocumentCache::default();
        let query = "query($id: ID!) { reportStatus(id: $id) { status } }";
        let mut first = cache.attach(async_graphql::Request::new(query));
        let mut second = cache.attach(async_graphql::Request::new(query));
        assert_eq!(cache.len(), 1);
        assert_eq!(
            format!("{:?}", first.parsed_query().unwrap()),
            format!("{:?}", second.parsed_query().unwrap())
        );
    }

    #[test]
    fn unparsable_and_long_queries_are_not_kept() {
        let cache = DocumentCache::default();
        let mut broken = cache.attach(async_graphql::Request::new("{ me { id }"));
        assert!(broken.parsed_query().is_err(), "left for async-graphql to report");
        let long = format!("{{ me {{ id }} }}{}", " ".repeat(MAX_QUERY_BYTES));
        cache.attach(async_graphql::Request::new(long));
        assert!(cache.is_empty());
    }

    #[test]
    fn the_least_recently_used_document_goes_first() {
        let cache = DocumentCache::default();
        let query = |i: usize| format!("query Q{i} {{ me {{ id }} }}");
        for i in 0..=CAPACITY.get() {
            cache.attach(async_graphql::Request::new(query(i)));
        }
        assert_eq!(cache.len(), CAPACITY.get());
        assert!(!cache.lock().contains(&query(0)));
        assert!(cache.lock().contains(&query(CAPACITY.get())));
    }
}
