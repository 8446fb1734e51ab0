//! How many refusals of requests without credentials the audit itemises.
//!
//! Why: every refused request is a durable audit record, and the audit is append-only.
//! Anyone who can reach Hearth could otherwise grow the store without bound, one 401 at a
//! time, on the same writer thread clinical writes wait for. Each client address gets
//! `unauthenticated_audit_per_minute` itemised records a minute; the rest of that minute's
//! refusals (from every address over its budget) become one summary record, written with
//! the next itemised refusal after the minute ends, or at shutdown. So every refusal is
//! still accounted for, in bounded space. Requests that carry a valid token are never
//! counted here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use time::OffsetDateTime;

/// Addresses tracked per minute; beyond this many, a new address has no budget of its own.
const MAX_ADDRESSES: usize = 10_000;

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub struct Admission {
    /// Itemise it in the audit (otherwise it is counted into the minute's summary).
    pub itemise: bool,
    /// A finished minute's refusals that were not itemised: write its summary first.
    pub summary: Option<Summary>,
}

/// Refusals of one minute that were counted, not itemised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The minute's start.
    pub minute: OffsetDateTime,
    pub refusals: u64,
}

#[derive(Debug)]
pub struct RefusalBudget {
    per_minute: u32,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    minute: i64,
    itemised: HashMap<IpAddr, u32>,
    counted: u64,
}

impl RefusalBudget {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            window: Mutex::new(Window::default()),
        }
    }

    /// Decides on one refusal of a request from `peer` (if known) at `at`.
    pub fn admit(&self, peer: Option<IpAddr>, at: OffsetDateTime) -> Admission {
        let minute = at.unix_timestamp().div_euclid(60);
        let mut w = self.window.lock().expect("refusal budget");
        let summary = (w.minute != minute)
            .then(|| {
                std::mem::replace(
                    &mut *w,
                    Window {
                        minute,
                        ..Default::default()
                    },
                )
            })
            .and_then(|old| summary_of(&old));
        // Without a peer address (it is always known when serving), one shared budget.
        let key = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let room = w.itemised.len() < MAX_ADDRESSES || w.itemised.contains_key(&key);
        let itemise = room && {
            let n = w.itemised.entry(key).or_default();
            *n += 1;
            *n <= self.per_minute
        };
        if !itemise {
            w.counted += 1;
        }
        Admission { itemise, summary }
    }

    /// The current minute's summary, if it counted any refusal (at shutdown).
    pub fn take(&self) -> Option<Summary> {
        let mut w = self.window.lock().expect("refusal budget");
        let old = std::mem::take(&mut *w);
        summary_of(&old)
    }
}

impl Summary {
    /// The audit record that stands for the minute's refusals not itemised.
    pub fn record(&self, at: OffsetDateTime) -> crate::audit::AuditEntry {
        let mut entry = crate::audit::AuditEntry::new(
            crate::ids::ReferenceId::new(),
            crate::clock::rfc3339(at),
            format!(
                "{} requests without valid credentials refused in the minute from {}, not itemised",
                self.refusals,
                crate::clock::rfc3339(self.minute)
            ),
            "refusals-summary",
            crate::audit::Direction::Internal,
        );
        entry.outcome = crate::audit::Outcome::Refused;
        entry.status = 401;
        entry.reason = Some("unauthenticated".into());
        entry.count = Some(self.refusals as usize);
        entry
    }
}

fn summary_of(w: &Window) -> Option<Summary> {
    (w.counted > 0).then(|| Summary {
        minute: OffsetDateTime::from_unix_timestamp(w.minute * 60)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        refusals: w.counted,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn each_address_is_itemised_up_to_its_budget_and_the_rest_summarised_once() {
        let budget = RefusalBudget::new(2);
        let a = Some(IpAddr::from([192, 0, 2, 1]));
        let b = Some(IpAddr::from([192, 0, 2, 2]));
        let t = datetime!(2026-11-23 10:00:05 UTC);
        let itemised: Vec<bool> = [a, a, a, b, a, b, b]
            .into_iter()
            .map(|p| budget.admit(p, t).itemise)
            .collect();
        assert_eq!(itemised, [true, true, false, true, false, true, false]);
        // The next minute starts afresh, and hands over the last one's count once.
        let next = budget.admit(a, datetime!(2026-11-23 10:01:00 UTC));
        assert!(next.itemise);
        assert_eq!(
            next.summary,
            Some(Summary {
                minute: datetime!(2026-11-23 10:00 UTC),
                refusals: 3
            })
        );
        assert_eq!(
            budget.admit(a, datetime!(2026-11-23 10:01:30 UTC)).summary,
            None
        );
        assert!(!budget.admit(a, datetime!(2026-11-23 10:01:40 UTC)).itemise);
        // At shutdown, the minute in progress.
        assert_eq!(budget.take().map(|s| s.refusals), Some(1));
        assert_eq!(budget.take(), None);
    }
}
