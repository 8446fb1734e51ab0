//! What every exchange asks the store first — which tenant an identifier names, and that
//! tenant's consent context — kept in memory.
//!
//! Why: profiling the inbound path put the read behind these answers at about a sixth of
//! its CPU: a hand-off to the blocking pool, SQLite page reads (every commit empties the
//! readers' page caches) and five consent terms parsed from JSON per notice. The answers
//! are small (a few identifiers and consent versions per tenant) and change rarely.
//!
//! Filled from the database on a miss. The store writer invalidates what a commit changed
//! after the commit and before it answers the writer's callers, so nobody reads state
//! older than a write they were told about. A generation counter stops a read that began
//! before such a commit from filling the cache with what the commit replaced.

use std::collections::HashMap;
use std::sync::Mutex;

use super::ConsentContext;
use crate::ids::{Identifier, TenantId};

/// What a write changed that the cache may hold.
#[derive(Debug, Default)]
pub struct Changes {
    pub tenants: Vec<TenantId>,
    pub identifiers: Vec<Identifier>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.identifiers.is_empty()
    }
}

/// The generation a read began at; a fill from an older generation is dropped.
#[derive(Debug, Clone, Copy)]
pub struct Stamp(u64);

#[derive(Debug)]
pub struct ContextCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    tenant_by_identifier: HashMap<Identifier, Option<TenantId>>,
    contexts: HashMap<TenantId, ConsentContext>,
}

impl ContextCache {
    /// A cache holding at most `capacity` identifiers and as many tenant contexts; when
    /// full it starts over rather than tracking recency (a refill is one read per tenant).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The maps stay consistent even if a holder panicked: every update is one insert.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take this before reading what a fill will carry.
    pub fn stamp(&self) -> Stamp {
        Stamp(self.lock().generation)
    }

    /// What each identifier names, if every one of them is cached.
    pub fn resolve(&self, identifiers: &[Identifier]) -> Option<Vec<Option<TenantId>>> {
        let inner = self.lock();
        identifiers
            .iter()
            .map(|i| inner.tenant_by_identifier.get(i).cloned())
            .collect()
    }

    pub fn context(&self, tenant: &TenantId) -> Option<ConsentContext> {
        self.lock().contexts.get(tenant).cloned()
    }

    pub fn fill_identifiers(
        &self,
        stamp: Stamp,
        identifiers: &[Identifier],
        resolved: &[Option<TenantId>],
    ) {
        let mut inner = self.lock();
        if inner.generation != stamp.0 {
            return;
        }
        if inner.tenant_by_identifier.len() + identifiers.len() > self.capacity {
            inner.tenant_by_identifier.clear();
        }
        for (i, t) in identifiers.iter().zip(resolved) {
            inner.tenant_by_identifier.insert(i.clone(), t.clone());
        }
    }

    pub fn fill_context(&self, stamp: Stamp, tenant: &TenantId, context: &ConsentContext) {
        let mut inner = self.lock();
        if inner.generation != stamp.0 {
            return;
        }
        if inner.contexts.len() >= self.capacity {
            inner.contexts.clear();
        }
        inner.contexts.insert(tenant.clone(), context.clone());
    }

    /// Forgets what `changes` touched; called by the writer after its commit.
    pub fn invalidate(&self, changes: &Changes) {
        if changes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        inner.generation += 1;
        for i in &changes.identifiers {
            inner.tenant_by_identifier.remove(i);
        }
        for t in &changes.tenants {
            inner.contexts.remove(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mrn(v: &str) -> Identifier {
        Identifier::new("urn:mrn", v)
    }

    #[test]
    fn a_fill_from_before_an_invalidation_is_dropped() {
        let cache = ContextCache::new(10);
        let tenant = TenantId::new("t-1");
        let stamp = cache.stamp();
        cache.invalidate(&Changes {
            tenants: vec![tenant.clone()],
            identifiers: vec![],
        });
        cache.fill_context(stamp, &tenant, &ConsentContext::default());
        assert!(cache.context(&tenant).is_none());

        let stamp = cache.stamp();
        cache.fill_context(stamp, &tenant, &ConsentContext::default());
        assert!(cache.context(&tenant).is_some());
    }

    #[test]
    fn resolves_only_when_every_identifier_is_cached_and_forgets_changed_ones() {
        let cache = ContextCache::new(10);
        let stamp = cache.stamp();
        cache.fill_identifiers(
            stamp,
            &[mrn("1"), mrn("2")],
            &[Some(TenantId::new("t-1")), None],
        );
        assert_eq!(
            cache.resolve(&[mrn("2"), mrn("1")]),
            Some(vec![None, Some(TenantId::new("t-1"))])
        );
        assert_eq!(cache.resolve(&[mrn("1"), mrn("3")]), None);
        cache.invalidate(&Changes {
            tenants: vec![],
            identifiers: vec![mrn("2")],
        });
        assert_eq!(cache.resolve(&[mrn("2")]), None);
        assert!(cache.resolve(&[mrn("1")]).is_some());
    }

    #[test]
    fn starts_over_when_full() {
        let cache = ContextCache::new(2);
        for n in 0..5 {
            let stamp = cache.stamp();
            cache.fill_context(
                stamp,
                &TenantId::new(format!("t-{n}")),
                &ConsentContext::default(),
            );
        }
        let held = (0..5)
            .filter(|n| cache.context(&TenantId::new(format!("t-{n}"))).is_some())
            .count();
        assert!((1..=2).contains(&held));
    }
}
