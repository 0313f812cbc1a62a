//! Paging (MISSION rows 21–27): rule firings in, notifications out.
//!
//! ```text
//! Firing ─▶ lifecycle (fingerprint, dedup, resolve) ─▶ silences / inhibition
//!        ─▶ routing tree ─▶ grouping (group_wait, group_interval, repeat)
//!        ─▶ durable outbox ─▶ receivers (email, webhooks) ─▶ escalation
//! ```
//!
//! [`model`] holds the types every part shares: the [`Alert`] the lifecycle
//! keeps, the [`Notification`] the outbox stores and a [`Receiver`] sends.

pub mod ack;
pub mod config;
pub mod engine;
pub mod matcher;
pub mod model;
pub mod outbox;
pub mod receiver;
pub mod route;
pub mod service;
pub mod silence;
pub mod store;

pub use model::{Alert, AlertStatus, DeliveryError, Notification, Receiver, SendFuture};
