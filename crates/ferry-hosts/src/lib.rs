//! ferry's host layer: everything the providers that place things on hosts (`nixos.machine`,
//! `nspawn.container`, `processes.set`) share.
//!
//! * [`spec`] — the `host` input (`"local"`, an SSH target, a podman container), its JSON
//!   Schema fragments, and [`Become`]: how a non-root SSH user becomes root (`sudo -n`,
//!   `doas -n`, `run0`, or none).
//! * [`exec`] — the [`HostExec`] trait every host operation goes through (a shell script, or a
//!   closure transfer); [`HostConnection`] implements it for the three transports with one
//!   escalation path, and [`fake::FakeHost`] for tests.
//! * [`error`] — [`HostError`], the one error type of host operations (told apart by variant
//!   and exit status, never by text), and its one mapping to a provider error.
//! * [`helper`] — ferry's helper scripts: installed hash-named in `/run/ferry`, called as root.
//! * [`transfer`] (through [`HostExec::copy_closure`]), [`build`] (local builds coalesced
//!   across a provider's resources), [`slots`] (the run's copy/activation limits).
//!
//! Architecture invariant: depends on `ferry-protocol` and `ferry-ssh` only, and knows no
//! provider; nothing here prints; secrets given as stdin never appear in a command line or an
//! error.

pub mod build;
mod build_log;
pub mod connection;
pub mod error;
pub mod exec;
pub mod fake;
pub mod helper;
pub mod slots;
pub mod spec;
mod transfer;

pub use connection::HostConnection;
pub use error::{Exit, HostError};
pub use exec::{Copied, Copy, HostExec, Output, Script, Transport};
pub use ferry_ssh::SshError;
pub use helper::Helper;
pub use slots::{SlotGuard, Slots};
pub use spec::{Become, HostSpec, SshHost};
