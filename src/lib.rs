//! Hearth: a FHIR R4 gateway for minimum-necessary housing–health data sharing.
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
pub mod startup;
pub mod store;
pub mod tenancy;
