//! Hearth: a FHIR R4 gateway that lets housing providers, clinics and managed-care
//! organisations share the minimum necessary information about a tenant, under the
//! tenant's consent, with an audit trail an inspector can follow.
//!
//! # Layout
//!
//! The domain (no HTTP, no SQL):
//! * [`dataset`] — the six integration-dataset items: the only data that reaches housing.
//! * [`mapping`] — declarative `mappings/` files turn FHIR into dataset items and report
//!   the paths they dropped.
//! * [`consent`] — consent terms read from FHIR `Consent`, and the one decision function.
//! * [`tenancy`] — linking a resource's subject to a tenant by identifier.
//! * [`audit`] — audit records and the hash chain.
//! * [`fhir`] — wire format: OperationOutcome, profiles (JSON Schema), CapabilityStatement.
//!
//! Orchestration and adapters:
//! * [`gateway`] — the operations (receive a notice, record a consent, …) in the fixed
//!   order authenticate → validate → link → map → consent → store + audit.
//! * [`store`] — storage traits; [`store::sqlite`] is the embedded implementation.
//! * [`http`] — axum routes, the envelope middleware (reference ID, auth, audit), errors.
//! * [`config`], [`auth`], [`clock`], [`ids`], [`error`] — shared plumbing.
//! * [`startup`] and [`cli`] — building, running and the `hearth` command line.

pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consent;
pub mod dataset;
pub mod error;
pub mod fhir;
pub mod gateway;
pub mod http;
pub mod ids;
pub mod mapping;
pub mod metrics;
pub mod relay;
pub mod startup;
pub mod store;
pub mod tenancy;
pub mod tls;
