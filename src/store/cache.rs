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
use crate::consent::RenewalDue;
use crate::ids::{Identifier, TenantId};

/// What a write changed that the cache may hold.
#[derive(Debug, Default)]
pub struct Changes {
    /// Tenants whose consents changed: their cached context is dropped.
    pub tenants: Vec<TenantId>,
    pub identifiers: Vec<Identifier>,
    /// Renewal prompts opened: applied to a cached context in place, because the first
    /// discharge notice for every tenant opens one and a miss costs a database read.
    pub renewals_opened: Vec<(TenantId, RenewalDue)>,
}

impl Changes {
    /// A position to roll back to with [`Changes::rolled_back_to`].
    pub fn mark(&self) -> usize {
        self.renewals_opened.len()
    }

    /// The writes since `mark` were rolled back: the renewals they opened are not
    /// applied, but the tenants' cached contexts are still dropped (always safe).
    pub fn rolled_back_to(&mut self, mark: usize) {
        let undone = self.renewals_opened.split_off(mark);
        self.tenants.extend(undone.into_iter().map(|(t, _)| t));
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.identifiers.is_empty() && self.renewals_opened.is_empty()
    }
}

/// The generation a read began at; a fill is dropped if what it fills changed since.
#[derive(Debug, Clone, Copy)]
pub struct Stamp(u64);

#[derive(Debug)]
pub struct ContextCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped by every invalidation.
    generation: u64,
    /// The generation at which each key last changed, so a fill is refused only for
    /// what changed under it (a busy writer would otherwise starve every fill).
    changed_at: HashMap<Key, u64>,
    /// Fills stamped before this are refused: `changed_at` was cleared at this
    /// generation to keep it bounded.
    forgotten_before: u64,
    tenant_by_identifier: HashMap<Identifier, Option<TenantId>>,
    contexts: HashMap<TenantId, ConsentContext>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Identifier(Identifier),
    Tenant(TenantId),
}

impl Inner {
    fn stale(&self, stamp: Stamp, key: &Key) -> bool {
        stamp.0 < self.forgotten_before || self.changed_at.get(key).is_some_and(|g| *g > stamp.0)
    }

    fn changed(&mut self, key: Key, capacity: usize) {
        if self.changed_at.len() >= capacity {
            self.changed_at.clear();
            self.forgotten_before = self.generation;
        }
        self.changed_at.insert(key, self.generation);
    }
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
        if inner.tenant_by_identifier.len() + identifiers.len() > self.capacity {
            inner.tenant_by_identifier.clear();
        }
        for (i, t) in identifiers.iter().zip(resolved) {
            if !inner.stale(stamp, &Key::Identifier(i.clone())) {
                inner.tenant_by_identifier.insert(i.clone(), t.clone());
            }
        }
    }

    pub fn fill_context(&self, stamp: Stamp, tenant: &TenantId, context: &ConsentContext) {
        let mut inner = self.lock();
        if inner.stale(stamp, &Key::Tenant(tenant.clone())) {
            return;
        }
        if inner.contexts.len() >= self.capacity {
            inner.contexts.clear();
        }
        inner.contexts.insert(tenant.clone(), context.clone());
    }

    /// Applies `changes`; called by the writer after its commit.
    pub fn invalidate(&self, changes: &Changes) {
        if changes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        inner.generation += 1;
        for i in &changes.identifiers {
            inner.tenant_by_identifier.remove(i);
            inner.changed(Key::Identifier(i.clone()), self.capacity);
        }
        for t in &changes.tenants {
            inner.contexts.remove(t);
            inner.changed(Key::Tenant(t.clone()), self.capacity);
        }
        for (t, due) in &changes.renewals_opened {
            if let Some(context) = inner.contexts.get_mut(t) {
                context.renewal_due = Some(due.clone());
            }
            inner.changed(Key::Tenant(t.clone()), self.capacity);
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
            ..Changes::default()
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
            identifiers: vec![mrn("2")],
            ..Changes::default()
        });
        assert_eq!(cache.resolve(&[mrn("2")]), None);
        assert!(cache.resolve(&[mrn("1")]).is_some());
    }

    #[test]
    fn a_change_to_one_tenant_does_not_refuse_fills_for_others() {
        let cache = ContextCache::new(10);
        let (a, b) = (TenantId::new("t-a"), TenantId::new("t-b"));
        let stamp = cache.stamp();
        cache.invalidate(&Changes {
            tenants: vec![a.clone()],
            ..Changes::default()
        });
        cache.fill_context(stamp, &b, &ConsentContext::default());
        cache.fill_context(stamp, &a, &ConsentContext::default());
        assert!(cache.context(&b).is_some());
        assert!(cache.context(&a).is_none());
    }

    #[test]
    fn an_opened_renewal_updates_the_cached_context_in_place() {
        let cache = ContextCache::new(10);
        let tenant = TenantId::new("t-1");
        cache.fill_context(cache.stamp(), &tenant, &ConsentContext::default());
        let due = RenewalDue {
            reason: "hospitalisation".into(),
            since: "2026-11-23T10:00:00Z".into(),
            reference_id: "01J".into(),
        };
        cache.invalidate(&Changes {
            renewals_opened: vec![(tenant.clone(), due.clone())],
            ..Changes::default()
        });
        assert_eq!(cache.context(&tenant).unwrap().renewal_due, Some(due));
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
