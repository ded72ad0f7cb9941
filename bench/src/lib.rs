//! Measuring instruments for licensd: a load generator that speaks the SDK protocol and checks
//! every answer, the floor server the figures are compared with, and the suite that writes
//! BENCHMARKS.md.

pub mod append;
pub mod deployment;
pub mod durable;
pub mod files;
pub mod fixture;
pub mod floor;
pub mod kafka;
pub mod live;
pub mod load;
pub mod nodes;
pub mod protocol;
pub mod rebuild;
pub mod report;
pub mod startup;
pub mod stats;
pub mod suite;
pub mod sweep;
pub mod users;
