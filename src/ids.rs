//! Identifiers that cross module boundaries, parsed once.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The reference ID of one transaction: in the `X-Reference-Id` header, the tracing span,
/// the audit record and anything stored because of it. ULIDs sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ReferenceId(ulid::Ulid);

/// The last reference ID issued (or found stored), so IDs increase in the order they are
/// made, even within a millisecond and across restarts with the clock stepped back: the
/// store finds "the latest exchange for this key" by the largest reference ID.
static LAST: std::sync::Mutex<ulid::Ulid> = std::sync::Mutex::new(ulid::Ulid::nil());

impl ReferenceId {
    pub fn new() -> Self {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = ulid::Ulid::generate();
        // Overflow of the random part needs 2^80 IDs in one millisecond.
        let next = if now > *last {
            now
        } else {
            last.increment().unwrap_or(now)
        };
        *last = next;
        Self(next)
    }

    /// IDs issued from now on sort after `stored`, one issued by an earlier run whose
    /// clock may have been ahead of this one's.
    pub fn issue_after(stored: ReferenceId) {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if stored.0 > *last {
            *last = stored.0;
        }
    }
}

impl Default for ReferenceId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ReferenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for ReferenceId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s).map(Self)
    }
}

impl From<ReferenceId> for String {
    fn from(id: ReferenceId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for ReferenceId {
    type Error = ulid::DecodeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_id!(
    /// A tenant, by the housing provider's tenant ID.
    TenantId
);
text_id!(
    /// A partner organisation (clinic, MCO, housing provider) as named in the config.
    PartnerId
);

/// An identifier as FHIR writes it: a system and a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    pub system: String,
    pub value: String,
}

impl Identifier {
    pub fn new(system: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            system: system.into(),
            value: value.into(),
        }
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}", self.system, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An earlier run's clock was an hour ahead: this run's IDs still sort after its.
    #[test]
    fn reference_ids_sort_after_those_of_an_earlier_run_with_a_faster_clock() {
        let ahead = ulid::Ulid::from_parts(ulid::Ulid::generate().timestamp_ms() + 3_600_000, 0);
        ReferenceId::issue_after(ReferenceId(ahead));
        let mut previous = ReferenceId(ahead);
        for _ in 0..1000 {
            let next = ReferenceId::new();
            assert!(next > previous);
            previous = next;
        }
    }

    #[test]
    fn reference_ids_increase_in_the_order_they_are_made() {
        let ids: Vec<ReferenceId> = (0..10_000).map(|_| ReferenceId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
