//! Hearth: a FHIR R4 gateway for minimum-necessary housing–health data sharing.
pub mod cli;
pub mod clock;
pub mod dataset;
pub mod ids;
pub mod mapping;
pub mod consent;
pub mod fhir;
pub mod tenancy;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod gateway;
pub mod http;
pub mod startup;
pub mod store;
