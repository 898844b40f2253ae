//! The data layer of `distill`: everything that is read or written between pipeline stages.
//!
//! It owns prompt sources ([`sources`], [`prompt_source`], Hub datasets in [`hub`]), synthetic reasoning tasks with gold answers ([`synth`]),
//! their programmatic chain-of-thought writer ([`cot`]), the adaptive difficulty curriculum
//! ([`curriculum`]), the trace row schema ([`schema`]), crash-safe Parquet shards with a manifest
//! and resume ([`shards`]), dropping damaged shards so their rows are written again ([`repair`]), the dataset cards written beside them ([`card`]), the deterministic multi-worker split ([`split`]), and the conversations
//! SFT reads from distill's shards or other tools' datasets ([`conversations`]). It contains no
//! model code. All fallible functions return [`errors::DataError`], whose messages name the file,
//! the line or row, and the field at fault. Helpers: [`columns`] (typed Arrow column access with
//! located errors) and [`hashing`] (SHA-256 for ids, checksums and the split).

pub mod card;
pub mod code_sources;
pub mod columns;
pub mod conversations;
pub mod corpus;
pub mod cot;
pub mod curriculum;
pub mod errors;
pub mod hashing;
pub mod hub;
pub mod pair_schema;
pub mod prompt_source;
pub mod repair;
pub mod schema;
pub mod shards;
pub mod sources;
pub mod split;
pub mod synth;

pub use errors::{DataError, Location, Result};
