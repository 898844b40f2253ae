//! distill: turn a strong reasoning teacher into long chain-of-thought training data and smaller
//! reasoning students (SFT and GRPO), with Parquet as the contract between stages.
//!
//! The binary `distill` only parses arguments ([`cli`]) and calls the stages in this library.

pub mod bench;
pub mod bench_kernels;
pub mod bench_memory;
pub mod cli;
pub mod compare;
pub mod data;
pub mod eval;
pub mod filter;
pub mod filter_bench;
pub mod generate;
pub mod model;
pub mod ops;
pub mod output_dir;
pub mod pipeline;
pub mod plot_font;
pub mod progress;
pub mod runtime;
pub mod sandbox;
pub mod teacher;
pub mod train;
pub mod verify;
