//! Who is calling: principals, their organisation and role, and bearer-token checks.
//!
//! Tokens are random, shown once when generated, and only their SHA-256 is kept in the
//! config. A token is high-entropy, so a plain hash is enough to make a leaked config
//! useless for impersonation.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::PartnerId;

/// What a principal may do. Each route states which roles it admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
#[clap(rename_all = "kebab-case")]
pub enum Role {
    /// A clinic EHR: pushes notices and consents.
    Clinic,
    /// A managed-care organisation's care-management platform.
    Mco,
    /// A housing worker or housing case-management system.
    Housing,
    /// A member of a joint case review.
    ReviewMember,
    /// Reads and verifies the audit trail.
    Auditor,
    /// Operates the gateway: the audit trail, and deliveries that failed (dead letters,
    /// without what the notes say). Never tenants' information: minimum necessary.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinic => "clinic",
            Role::Mco => "mco",
            Role::Housing => "housing",
            Role::ReviewMember => "review-member",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Partners that exchange clinical notices with Hearth.
    pub fn is_partner(self) -> bool {
        matches!(self, Role::Clinic | Role::Mco)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub org: PartnerId,
    pub role: Role,
}

impl Principal {
    pub fn actor(&self) -> crate::audit::Actor {
        crate::audit::Actor {
            principal: self.id.clone(),
            org: self.org.clone(),
            role: self.role.as_str().to_string(),
        }
    }
}

/// Principals by token hash.
#[derive(Debug, Default)]
pub struct Principals(HashMap<String, Principal>);

impl Principals {
    pub fn new(entries: impl IntoIterator<Item = (String, Principal)>) -> Self {
        Self(
            entries
                .into_iter()
                .map(|(h, p)| (h.to_ascii_lowercase(), p))
                .collect(),
        )
    }

    /// The principal a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<&Principal> {
        self.0.get(&hash_token(token))
    }
}

/// SHA-256 of a token, lower-case hex: what the config stores.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token (`hth_` + 256 bits, hex).
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("hth_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_only_its_principal() {
        let token = generate_token();
        let p = Principal {
            id: "ehr".into(),
            org: PartnerId::new("riverside-clinic"),
            role: Role::Clinic,
        };
        let principals = Principals::new([(hash_token(&token), p.clone())]);
        assert_eq!(principals.authenticate(&token), Some(&p));
        assert_eq!(principals.authenticate(&generate_token()), None);
    }
}
