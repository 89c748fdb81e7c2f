//! The Envoy side of the same config: a complete bootstrap (listener, ext_proc filter, routes on
//! `x-ai-eg-model`, one cluster per Backend) rendered from the compiled [`Config`], and a small
//! client of Envoy's admin interface.

pub mod admin;
mod auth;
mod bootstrap;
mod credentials;
mod failover;
mod local_reply;

pub use bootstrap::{
    render, render_yaml, BackendOverride, EnvoyOptions, HostPort, ProcessorAddress,
};
pub use credentials::Credentials;
