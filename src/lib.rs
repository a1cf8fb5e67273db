//! dkms-trigger: hooks record intents into a spool; one finalizer plans and runs the DKMS builds.
//! See docs/design.md for the map of modules.
// Test code builds fake roots and runs helper programs directly; the library itself may not
// (clippy.toml).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod backend;
pub mod boot;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dkmsconf;
pub mod executor;
pub mod exit;
pub mod failpoint;
pub mod finalize;
pub mod fingerprint;
pub mod generate;
pub mod hook;
pub mod intent;
pub mod inventory;
pub mod lock;
pub mod paths;
pub mod pipeline;
pub mod plan;
pub mod planner;
pub mod removal;
pub mod report;
pub mod root;
pub mod runner;
pub mod scheduler;
pub mod secureboot;
pub mod spool;
pub mod state;
pub mod statefile;
pub mod status;
pub mod targets;
pub mod ui;
pub mod validate;
pub mod version;
