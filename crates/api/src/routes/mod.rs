//! The `/v1` handlers, one module per resource.

pub mod audit;
pub mod incidents;
pub mod keys;
pub mod maintenances;
pub mod public;
pub mod services;
pub mod stream;
pub mod webhooks;
