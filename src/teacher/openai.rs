//! A teacher behind any OpenAI-compatible HTTP endpoint (OpenAI, vLLM, SGLang, TGI, DeepSeek's
//! API): `POST /v1/chat/completions` with the conversation, or `POST /v1/completions` with the
//! rendered prompt text; `n` samples per request; `temperature`, `top_p`, `max_tokens`, `seed`.
//!
//! Requests run on `concurrency` std threads, each with a whole-request timeout. Rate limits
//! (429), 408, server errors (5xx), connection errors and timeouts are retried with exponential
//! backoff and jitter ([`RetryPolicy`]); any other 4xx, and a 200 whose body is not a
//! completion response, fail at once with an error naming the endpoint, the status and what
//! was wrong. The API key is read from an environment variable, sent only in the
//! `Authorization` header and never logged, stored or put in an error.
//!
//! R1 endpoints return the thought in `reasoning_content` (or `reasoning`); it is joined back
//! as `<think>\n{reasoning}\n</think>\n\n{content}` so rows look the same whichever teacher ran.
//! Usage: `prompt_tokens` is the response's; with `n = 1` `completion_tokens` is too, with
//! `n > 1` the response's total is apportioned to the samples by text length (servers do not
//! report per-choice counts).
//!
//! Servers that ignore `n` (e.g. `transformers serve`) answer one choice: the missing samples
//! are requested one by one, sample `k` with seed `seed + k` ([`sample_seed`]), and the
//! endpoint is remembered as ignoring `n`, so later jobs send one request per sample.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use super::redact::Redactor;
use super::response::{parse_response, snippet};
use super::retry::{is_retryable_status, RetryPolicy};
use super::{PromptJob, SamplingParams, Teacher, TeacherError, TeacherInfo, TeacherSample};

/// Which endpoint of the API to call.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum ApiKind {
    /// `/v1/chat/completions`: the server applies its chat template to the messages.
    Chat,
    /// `/v1/completions`: the prompt text rendered here is sent as is.
    Completions,
}

/// Settings of an endpoint teacher.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiConfig {
    /// Base URL (`http://host:8000`, `http://host:8000/v1`) or the full endpoint URL.
    pub endpoint: String,
    /// The `model` field of every request.
    pub model: String,
    /// Chat or completions.
    pub api: ApiKind,
    /// The environment variable holding the API key (`None`: no `Authorization` header).
    pub api_key_env: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Whole-request timeout (connect, send, generate, receive).
    pub timeout: Duration,
    /// When to retry.
    pub retry: RetryPolicy,
}

/// The endpoint teacher; see the module docs.
pub struct OpenAiTeacher {
    agent: ureq::Agent,
    url: String,
    /// `url` with any credentials replaced: what rows, summaries and errors show.
    shown_url: String,
    redactor: Redactor,
    model: String,
    api: ApiKind,
    api_key: Option<String>,
    concurrency: usize,
    retry: RetryPolicy,
    /// Whether the endpoint returns `n` choices when asked; cleared the first time it returns
    /// fewer, after which every sample is its own request.
    honours_n: AtomicBool,
}

/// The seed of sample `sample_index` of a job seeded `job_seed` when it is requested on its
/// own: `job_seed + sample_index` (wrapping), so sample 0 keeps the job's seed and a request
/// for all `n` choices and the per-sample fallback start from the same seed.
pub fn sample_seed(job_seed: u64, sample_index: u32) -> u64 {
    job_seed.wrapping_add(u64::from(sample_index))
}

impl std::fmt::Debug for OpenAiTeacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiTeacher")
            .field("url", &self.shown_url)
            .field("model", &self.model)
            .field("api", &self.api)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The full URL of `api` for a user's endpoint: kept as is when it already names the API's
/// path, else `/v1/...` (or just `/...` after a trailing `/v1`) is appended.
pub fn endpoint_url(endpoint: &str, api: ApiKind) -> String {
    let base = endpoint.trim_end_matches('/');
    let path = match api {
        ApiKind::Chat => "chat/completions",
        ApiKind::Completions => "completions",
    };
    if base.ends_with(&format!("/{path}")) {
        base.to_string()
    } else if base.ends_with("/v1") {
        format!("{base}/{path}")
    } else {
        format!("{base}/v1/{path}")
    }
}

impl OpenAiTeacher {
    /// A teacher for `config`; reads the API key from its environment variable now.
    pub fn new(config: &OpenAiConfig) -> Result<Self, TeacherError> {
        let api_key = match &config.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                TeacherError::Config(format!(
                    "the API key variable {var} (--api-key-env) is not set or not UTF-8"
                ))
            })?),
            None => None,
        };
        if config.model.is_empty() {
            return Err(TeacherError::Config(
                "an endpoint teacher needs a model name (--api-model)".into(),
            ));
        }
        let agent = ureq::AgentBuilder::new().timeout(config.timeout).build();
        let url = endpoint_url(&config.endpoint, config.api);
        let redactor = Redactor::new(&url, api_key.as_deref());
        Ok(OpenAiTeacher {
            agent,
            shown_url: redactor.scrub(&url),
            redactor,
            url,
            model: config.model.clone(),
            api: config.api,
            api_key,
            concurrency: config.concurrency.max(1),
            retry: config.retry.clone(),
            honours_n: AtomicBool::new(true),
        })
    }

    /// The JSON body of a request for `n` choices drawn with `seed`.
    fn body(&self, job: &PromptJob, params: &SamplingParams, n: usize, seed: u64) -> Value {
        let mut body = json!({
            "model": self.model,
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": seed,
        });
        match self.api {
            ApiKind::Chat => body["messages"] = json!(job.messages),
            ApiKind::Completions => body["prompt"] = json!(job.prompt),
        }
        body
    }

    /// Sends one request, retrying as the policy says; returns the status and body of the
    /// first successful response.
    fn post(&self, body: &str) -> Result<(u16, String), TeacherError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .agent
                .post(&self.url)
                .set("Content-Type", "application/json");
            if let Some(key) = &self.api_key {
                request = request.set("Authorization", &format!("Bearer {key}"));
            }
            let retries_left = attempt <= self.retry.max_retries;
            let (wait, failure) = match request.send_string(body) {
                Ok(response) => {
                    let status = response.status();
                    match response.into_string() {
                        Ok(text) => return Ok((status, text)),
                        Err(error) => (None, self.transport(attempt, error.to_string())),
                    }
                }
                Err(ureq::Error::Status(status, response)) => {
                    let retry_after = response
                        .header("Retry-After")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.into_string().unwrap_or_default();
                    let failure = TeacherError::Status {
                        endpoint: self.shown_url.clone(),
                        status,
                        attempts: attempt,
                        message: snippet(&self.redactor.scrub(&text)),
                    };
                    if !is_retryable_status(status) {
                        return Err(failure);
                    }
                    (retry_after, failure)
                }
                Err(ureq::Error::Transport(transport)) => {
                    let failure = self.transport(attempt, transport.to_string());
                    if !is_retryable_transport(transport.kind()) {
                        return Err(failure);
                    }
                    (None, failure)
                }
            };
            if !retries_left {
                return Err(failure);
            }
            std::thread::sleep(self.retry.delay(attempt, wait));
        }
    }

    fn transport(&self, attempts: u32, message: String) -> TeacherError {
        let prefix = format!("{}: ", self.url);
        let message = message
            .strip_prefix(&prefix)
            .map_or(message.clone(), str::to_string);
        TeacherError::Transport {
            endpoint: self.shown_url.clone(),
            attempts,
            message: self.redactor.scrub(&message),
        }
    }

    /// Samples one job: one request with `n` choices while the endpoint honours `n`; the
    /// samples it did not return are asked for one request each (see [`sample_seed`]).
    fn sample_job(
        &self,
        job_index: usize,
        job: &PromptJob,
        params: &SamplingParams,
    ) -> Result<Vec<TeacherSample>, TeacherError> {
        let mut samples = Vec::with_capacity(params.n);
        if params.n == 1 || self.honours_n.load(Ordering::Relaxed) {
            samples = self.request(job_index, job, params, params.n, 0)?;
            if samples.len() < params.n {
                self.honours_n.store(false, Ordering::Relaxed);
            }
        }
        let returned: Vec<u32> = samples.iter().map(|s| s.sample_index).collect();
        for sample_index in 0..params.n as u32 {
            if !returned.contains(&sample_index) {
                samples.extend(self.request(job_index, job, params, 1, sample_index)?);
            }
        }
        Ok(samples)
    }

    /// One request for `n` choices of `job`, the first being sample `first_sample` (drawn
    /// with [`sample_seed`]`(job.seed, first_sample)`); may return fewer than `n` samples.
    fn request(
        &self,
        job_index: usize,
        job: &PromptJob,
        params: &SamplingParams,
        n: usize,
        first_sample: u32,
    ) -> Result<Vec<TeacherSample>, TeacherError> {
        let seed = sample_seed(job.seed, first_sample);
        let body = self.body(job, params, n, seed).to_string();
        let (status, text) = self.post(&body)?;
        let malformed = |message: String| TeacherError::MalformedResponse {
            endpoint: self.shown_url.clone(),
            status,
            message: self.redactor.scrub(&message),
        };
        let parsed = parse_response(&text, self.api, n).map_err(malformed)?;
        if n == 1 && parsed.indices().is_empty() {
            return Err(malformed("no choices".into()));
        }
        Ok(parsed.into_samples(job_index, seed, first_sample))
    }
}

/// Whether a transport failure may go away on retry: DNS, connection and I/O errors
/// (timeouts included); not a bad URL or an unsupported scheme.
fn is_retryable_transport(kind: ureq::ErrorKind) -> bool {
    matches!(
        kind,
        ureq::ErrorKind::Dns
            | ureq::ErrorKind::ConnectionFailed
            | ureq::ErrorKind::Io
            | ureq::ErrorKind::ProxyConnect
            | ureq::ErrorKind::BadStatus
    )
}

impl Teacher for OpenAiTeacher {
    fn describe(&self) -> TeacherInfo {
        TeacherInfo {
            name: format!("{}@{}", self.model, self.shown_url),
            // Large waves: with streaming, a slow request only gates the end of its wave.
            batch_size: self.concurrency.saturating_mul(64),
            parameters: None,
        }
    }

    fn sample(
        &mut self,
        batch: &[PromptJob],
        params: &SamplingParams,
    ) -> Result<Vec<TeacherSample>, TeacherError> {
        let mut samples = Vec::with_capacity(batch.len() * params.n);
        self.sample_streaming(batch, params, &mut |ready| {
            samples.extend(ready);
            true
        })?;
        Ok(samples)
    }

    /// Runs the jobs on `concurrency` threads and hands each job's samples to `sink` (on the
    /// calling thread) as soon as its request completes.
    fn sample_streaming(
        &mut self,
        batch: &[PromptJob],
        params: &SamplingParams,
        sink: &mut dyn FnMut(Vec<TeacherSample>) -> bool,
    ) -> Result<(), TeacherError> {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let this = &*self;
        let mut first_error = None;
        std::thread::scope(|scope| {
            let (sender, receiver) = mpsc::channel();
            for _ in 0..this.concurrency.min(batch.len()) {
                let sender = sender.clone();
                let (next, stop) = (&next, &stop);
                scope.spawn(move || loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    if index >= batch.len() || stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let result = this.sample_job(index, &batch[index], params);
                    if result.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    if sender.send(result).is_err() {
                        break;
                    }
                });
            }
            drop(sender);
            for result in receiver {
                match result {
                    // Finished samples are delivered even after a failure, so they are kept.
                    Ok(samples) => {
                        if !sink(samples) {
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                    Err(error) => {
                        stop.store(true, Ordering::SeqCst);
                        first_error.get_or_insert(error);
                    }
                }
            }
        });
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        let chat = ApiKind::Chat;
        assert_eq!(
            endpoint_url("http://h:8000", chat),
            "http://h:8000/v1/chat/completions"
        );
        assert_eq!(
            endpoint_url("http://h:8000/v1/", chat),
            "http://h:8000/v1/chat/completions"
        );
        assert_eq!(
            endpoint_url("http://h/v1/completions", ApiKind::Completions),
            "http://h/v1/completions"
        );
    }
}
