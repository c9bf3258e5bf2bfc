//! ferry provider protocol v1.
//!
//! A provider is a program that speaks JSON lines on stdin/stdout (stderr is free-form log).
//! ferry starts one long-lived process per provider per run, sends a `handshake` request first,
//! and then any number of operation requests, possibly several at once; responses carry the
//! request id and may arrive out of order. The full specification is
//! `docs/provider-protocol.md`; the JSON Schema is `docs/provider-protocol.schema.json`.
//!
//! This crate stands alone so a provider author depends on it and nothing else:
//! [`messages`] holds the wire types, [`sdk`] a ready-made request loop ([`sdk::serve`]),
//! [`conformance`] a harness that checks a provider program against the specification.
//!
//! Architecture invariant: no dependency on any other ferry crate; no async runtime.

pub mod conformance;
pub mod messages;
pub mod options;
pub mod sdk;

pub use messages::*;
pub use options::RunOptions;

/// The protocol version this crate implements.
pub const PROTOCOL_VERSION: u32 = 1;
