//! distill's AdamW against torch.optim.AdamW with `clip_grad_norm_` (the optimiser transformers'
//! Trainer and TRL use): four steps of two accumulated micro-batches on three named parameters, with
//! weight decay on the matrix only and one clipped step. The fixture is made by
//! `tests/fixtures/training/make_adamw_reference.py`, which records the torch version.

#[path = "support/adamw_fixture.rs"]
mod adamw_fixture;

#[test]
fn adamw_with_clipping_and_accumulation_matches_torch() {
    adamw_fixture::replay_against_torch(&candle_core::Device::Cpu, 1e-6);
}
