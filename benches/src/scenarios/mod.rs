//! One module per scenario of the issue; each returns a [`crate::report::Report`].

pub mod big_reads;
pub mod estimate;
pub mod footprint;
pub mod gateway;
pub mod output;
pub mod pickup;
pub mod purge;
pub mod scale;
pub mod throughput;
pub mod ui;
