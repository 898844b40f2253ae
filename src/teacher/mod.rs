//! Teachers: whatever samples long chain-of-thought completions for rendered prompts.
//!
//! This module owns the [`Teacher`] trait and the types that cross it ([`PromptJob`] in,
//! [`TeacherSample`] out, [`SamplingParams`] and [`TeacherInfo`]), plus the typed
//! [`TeacherError`]. The generate stage only talks to the trait, so it does not care whether
//! the samples came from our decoder ([`local::LocalTeacher`], CPU or CUDA) or from an
//! OpenAI-compatible HTTP endpoint ([`openai::OpenAiTeacher`], e.g. vLLM serving DeepSeek-R1).
//! [`endpoint`] is one server and one HTTP attempt against it, `pool` spreads requests over
//! several endpoints and benches failing ones, [`rate_limit`] paces requests and tokens,
//! [`retry`] holds the retry policy (exponential backoff with jitter), `response` reads
//! response bodies.

pub mod endpoint;
pub mod local;
pub mod openai;
mod pool;
pub mod rate_limit;
pub mod redact;
mod response;
pub mod retry;
mod sse;

use crate::model::{FinishReason, Message};

/// One prompt to sample: the conversation, its rendering and the seed its samples derive from.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptJob {
    /// The conversation (optional system turn, then the user turn) for chat APIs.
    pub messages: Vec<Message>,
    /// The exact prompt text after the chat template (local teacher and completions APIs).
    pub prompt: String,
    /// The seed of this prompt; sample `s` draws from a generator derived from (seed, s).
    pub seed: u64,
}

/// How completions are sampled; shared by every job of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature (0 = greedy).
    pub temperature: f64,
    /// Nucleus threshold (1 = off).
    pub top_p: f64,
    /// Keep only the k most likely tokens (0 = off; local teacher only).
    pub top_k: usize,
    /// Samples per prompt.
    pub n: usize,
    /// Longest completion, in tokens.
    pub max_new_tokens: usize,
}

/// Who a teacher is, for row provenance and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeacherInfo {
    /// The name recorded in every row's `teacher` column: a model path or hub id, or
    /// `<endpoint>#<model>` for an HTTP endpoint.
    pub name: String,
    /// How many prompts one [`Teacher::sample`] call handles well at once.
    pub batch_size: usize,
    /// Parameters of the teacher model, when known (a local model), for compute accounting.
    pub parameters: Option<usize>,
}

/// One completion of one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherSample {
    /// Index of the job (in the batch passed to [`Teacher::sample`]) it answers.
    pub job_index: usize,
    /// Which of the job's `n` samples it is (0-based).
    pub sample_index: u32,
    /// The generated text (without the prompt; reasoning joined as `<think>…</think>` when an
    /// endpoint returned it separately).
    pub text: String,
    /// The seed this sample was drawn with.
    pub seed: u64,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt length in tokens; `None` when an endpoint reported no usage.
    pub prompt_tokens: Option<u32>,
    /// Completion length in tokens; `None` when an endpoint reported no usage.
    pub completion_tokens: Option<u32>,
    /// The endpoint that served it (URL without credentials); `None` for a local teacher.
    pub endpoint: Option<String>,
    /// What it cost at its endpoint's prices; `None` without prices or usage.
    pub cost: Option<f64>,
}

/// Errors of a teacher, typed where the caller may branch (a failed endpoint versus a model).
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    /// The local model failed (loading, tokenising or generating).
    #[error("local teacher: {0}")]
    Model(crate::model::ModelError),
    /// An endpoint answered with an error status that retrying will not fix (a 4xx other than
    /// 429), or kept failing until the retries ran out.
    #[error("{endpoint}: HTTP {status} after {attempts} attempt(s): {message}")]
    Status {
        /// The URL that was called.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The start of the response body.
        message: String,
    },
    /// The endpoint could not be reached (connection error or timeout) within the retries.
    #[error("{endpoint}: request failed after {attempts} attempt(s): {message}")]
    Transport {
        /// The URL that was called.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// What went wrong.
        message: String,
    },
    /// An endpoint answered 200 with a body that is not a valid completion response.
    #[error("{endpoint}: HTTP {status} with a malformed response body: {message}")]
    MalformedResponse {
        /// The URL that was called.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// What was wrong with the body.
        message: String,
    },
    /// The teacher's settings are unusable (e.g. an API key variable that is not set).
    #[error("{0}")]
    Config(String),
}

impl From<crate::model::ModelError> for TeacherError {
    fn from(error: crate::model::ModelError) -> Self {
        // Not a `source`: the message already holds the model error's text once.
        TeacherError::Model(error)
    }
}

/// Anything that samples completions for prompts.
pub trait Teacher {
    /// Who this teacher is (recorded in every row).
    fn describe(&self) -> TeacherInfo;

    /// A counter of the tokens (text pieces) received so far by requests still streaming, for
    /// a progress bar that moves while long samples are generated; `None` when the teacher
    /// does not stream.
    fn streamed_tokens(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicU64>> {
        None
    }

    /// Refuses a rendered prompt that cannot be sampled with `max_new_tokens` new tokens (a local
    /// model's context); checked for every prompt before any sampling starts. Endpoints enforce
    /// their own limits, so the default accepts everything.
    fn check_prompt(&self, _prompt: &str, _max_new_tokens: usize) -> Result<(), TeacherError> {
        Ok(())
    }

    /// Samples `params.n` completions for every job; the result holds exactly one
    /// [`TeacherSample`] per (job, sample index), in any order.
    fn sample(
        &mut self,
        batch: &[PromptJob],
        params: &SamplingParams,
    ) -> Result<Vec<TeacherSample>, TeacherError>;

    /// Like [`Teacher::sample`], but hands samples to `sink` as they become ready (in any
    /// grouping, each sample exactly once), so a caller can save them before the slowest job
    /// of the batch ends. `sink` returns `false` to stop early (no further jobs are started).
    /// The default samples the whole batch, then calls `sink` once.
    fn sample_streaming(
        &mut self,
        batch: &[PromptJob],
        params: &SamplingParams,
        sink: &mut dyn FnMut(Vec<TeacherSample>) -> bool,
    ) -> Result<(), TeacherError> {
        let samples = self.sample(batch, params)?;
        sink(samples);
        Ok(())
    }
}
