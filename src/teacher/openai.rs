//! A teacher behind one or more OpenAI-compatible HTTP endpoints (OpenAI, vLLM, SGLang, TGI,
//! DeepSeek's API): `POST /v1/chat/completions` with the conversation, or `POST /v1/completions`
//! with the rendered prompt text; `n` samples per request; `temperature`, `top_p`,
//! `max_tokens`, `seed`.
//!
//! Requests run on std threads, as many as the endpoints' concurrencies together; each request
//! goes to the least-loaded healthy endpoint of the pool (`pool`), within that endpoint's rate limits
//! ([`super::rate_limit`]). Rate limits (429), 408, server errors (5xx), connection errors and
//! timeouts are retried with exponential backoff and jitter ([`RetryPolicy`]), on another
//! endpoint when one is available (in-flight work of a failing endpoint moves over); an endpoint
//! that keeps failing is benched and probed again later. Any other 4xx, and a 200 whose body is
//! not a completion response, fail at once with an error naming the endpoint, the status and
//! what was wrong. When a request has used up its retries the run stops: the samples finished so
//! far have been handed over, so nothing done is lost. API keys are read from environment
//! variables, sent only in the `Authorization` header and never logged, stored or put in an
//! error.
//!
//! R1 endpoints return the thought in `reasoning_content` (or `reasoning`); it is joined back
//! as `<think>\n{reasoning}\n</think>\n\n{content}` so rows look the same whichever teacher ran.
//! Usage: `prompt_tokens` is the response's; with `n = 1` `completion_tokens` is too, with
//! `n > 1` the response's total is apportioned to the samples by text length (servers do not
//! report per-choice counts). With prices, each sample carries its cost: its completion tokens
//! plus its share of the request's prompt tokens.
//!
//! Servers that ignore `n` (e.g. `transformers serve`) answer one choice: the missing samples
//! are requested one by one, sample `k` with seed `seed + k` ([`sample_seed`]), and the
//! endpoint is remembered as ignoring `n`, so later jobs send one request per sample there.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::{json, Value};

use super::endpoint::{Endpoint, EndpointConfig, Failure, Transfer};
use super::pool::{BenchPolicy, Pool};
use super::retry::RetryPolicy;
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
    /// The endpoints (at least one), in order of preference when equally loaded.
    pub endpoints: Vec<EndpointConfig>,
    /// Chat or completions.
    pub api: ApiKind,
    /// Whole responses or streamed ones, and their timeout.
    pub transfer: Transfer,
    /// When to retry.
    pub retry: RetryPolicy,
}

/// Failures in a row that bench an endpoint.
const BENCH_AFTER_FAILURES: u32 = 3;

/// The endpoint teacher; see the module docs.
#[derive(Debug)]
pub struct OpenAiTeacher {
    endpoints: Vec<Endpoint>,
    pool: Pool,
    api: ApiKind,
    retry: RetryPolicy,
    /// Pieces of text received in streams so far (about one token each).
    streamed: Arc<AtomicU64>,
}

/// The seed of sample `sample_index` of a job seeded `job_seed` when it is requested on its
/// own: `job_seed + sample_index` (wrapping), so sample 0 keeps the job's seed and a request
/// for all `n` choices and the per-sample fallback start from the same seed.
pub fn sample_seed(job_seed: u64, sample_index: u32) -> u64 {
    job_seed.wrapping_add(u64::from(sample_index))
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

/// What one request asks for: `n` choices, the first being sample `first_sample`.
#[derive(Debug, Clone, Copy)]
struct Ask {
    n: usize,
    first_sample: u32,
}

impl OpenAiTeacher {
    /// A teacher for `config`; reads the API keys from their environment variables now.
    pub fn new(config: &OpenAiConfig) -> Result<Self, TeacherError> {
        if config.endpoints.is_empty() {
            return Err(TeacherError::Config(
                "an endpoint teacher needs at least one endpoint".into(),
            ));
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| Endpoint::new(e, config.api, config.transfer))
            .collect::<Result<Vec<_>, _>>()?;
        let pool = Pool::new(
            endpoints.iter().map(|e| e.concurrency).collect(),
            BenchPolicy {
                after_failures: BENCH_AFTER_FAILURES,
                first: config.retry.initial_backoff.max(Duration::from_millis(1)),
                longest: config.retry.max_backoff,
            },
        );
        Ok(OpenAiTeacher {
            endpoints,
            pool,
            api: config.api,
            retry: config.retry.clone(),
            streamed: Arc::default(),
        })
    }

    /// The JSON body of a request to `endpoint` for `n` choices drawn with `seed`.
    fn body(
        &self,
        endpoint: &Endpoint,
        job: &PromptJob,
        params: &SamplingParams,
        n: usize,
        seed: u64,
    ) -> Value {
        let mut body = json!({
            "model": endpoint.model,
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
        if endpoint.streams() {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    /// Samples one job: one request with `n` choices on an endpoint that honours `n`; the
    /// samples it did not return are asked for one request each (see [`sample_seed`]).
    /// `Ok(None)` when the pool was stopped before the job finished.
    fn sample_job(
        &self,
        job_index: usize,
        job: &PromptJob,
        params: &SamplingParams,
    ) -> Result<Option<Vec<TeacherSample>>, TeacherError> {
        let mut samples: Vec<TeacherSample> = Vec::with_capacity(params.n);
        loop {
            let missing =
                (0..params.n as u32).find(|k| samples.iter().all(|s| s.sample_index != *k));
            let Some(first_missing) = missing else {
                return Ok(Some(samples));
            };
            let whole_job = samples.is_empty();
            let ask = |endpoint: &Endpoint| {
                if whole_job && (params.n == 1 || endpoint.honours_n()) {
                    Ask {
                        n: params.n,
                        first_sample: 0,
                    }
                } else {
                    Ask {
                        n: 1,
                        first_sample: first_missing,
                    }
                }
            };
            match self.request(job_index, job, params, ask)? {
                Some(got) => samples.extend(got),
                None => return Ok(None),
            }
        }
    }

    /// One request of `job`, retried as the policy says, on the endpoints the pool gives;
    /// `ask` says what to ask the chosen endpoint for. `Ok(None)` when the pool was stopped.
    fn request(
        &self,
        job_index: usize,
        job: &PromptJob,
        params: &SamplingParams,
        ask: impl Fn(&Endpoint) -> Ask,
    ) -> Result<Option<Vec<TeacherSample>>, TeacherError> {
        let mut attempt = 0;
        let mut avoid = None;
        loop {
            attempt += 1;
            let Some(lease) = self.pool.acquire(avoid) else {
                return Ok(None);
            };
            let index = lease.index();
            let endpoint = &self.endpoints[index];
            let Ask { n, first_sample } = ask(endpoint);
            let seed = sample_seed(job.seed, first_sample);
            let body = self.body(endpoint, job, params, n, seed).to_string();
            // About four characters a token: a reservation, settled with the real usage.
            let reservation = endpoint.limiter.admit(job.prompt.len() as f64 / 4.0);
            std::thread::sleep(reservation.wait);
            let mut on_piece = || {
                self.streamed.fetch_add(1, Ordering::Relaxed);
            };
            let failure = match endpoint.call(&body, self.api, n, attempt, &mut on_piece) {
                Ok(success) => {
                    let response = success.response;
                    let used = response.prompt_tokens.unwrap_or(0) as f64
                        + response.completion_tokens.unwrap_or(0) as f64;
                    endpoint.limiter.settle(reservation, used);
                    if let Some(pause) = success.pause {
                        self.pool.pause(index, pause);
                    }
                    if response.indices().len() < n {
                        endpoint.ignores_n();
                    }
                    lease.succeeded();
                    let mut samples = response.into_samples(job_index, seed, first_sample);
                    for sample in &mut samples {
                        sample.endpoint = Some(endpoint.shown_url.clone());
                    }
                    if let Some(prices) = endpoint.prices {
                        add_costs(&mut samples, prices);
                    }
                    return Ok(Some(samples));
                }
                Err(failure) => failure,
            };
            endpoint.limiter.settle(reservation, 0.0);
            let Failure {
                error,
                retryable,
                unhealthy,
                pause,
            } = failure;
            if unhealthy {
                lease.failed();
            } else {
                drop(lease);
            }
            if let Some(pause) = pause {
                self.pool.pause(index, pause);
            }
            if !retryable || attempt > self.retry.max_retries {
                return Err(error);
            }
            avoid = Some(index);
            if pause.is_none() && !self.pool.has_other_up(index) {
                std::thread::sleep(self.retry.delay(attempt, None));
            }
        }
    }
}

/// Sets each sample's cost at `prices`: its completion tokens plus an equal share of the
/// request's prompt tokens (billed once per request); unknown when the usage is.
fn add_costs(samples: &mut [TeacherSample], prices: super::endpoint::Prices) {
    let share = samples.len().max(1) as f64;
    for sample in samples {
        sample.cost = match (sample.prompt_tokens, sample.completion_tokens) {
            (Some(prompt), Some(completion)) => {
                Some(prices.cost(f64::from(prompt) / share, f64::from(completion)))
            }
            _ => None,
        };
    }
}

impl Teacher for OpenAiTeacher {
    fn describe(&self) -> TeacherInfo {
        let names: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| format!("{}@{}", e.model, e.shown_url))
            .collect();
        let concurrency: usize = self.endpoints.iter().map(|e| e.concurrency).sum();
        TeacherInfo {
            name: names.join(", "),
            // Large waves: with streaming, a slow request only gates the end of its wave.
            batch_size: concurrency.saturating_mul(64),
            parameters: None,
        }
    }

    fn streamed_tokens(&self) -> Option<Arc<AtomicU64>> {
        self.endpoints
            .iter()
            .any(Endpoint::streams)
            .then(|| self.streamed.clone())
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

    /// Runs the jobs on as many threads as the endpoints' concurrencies together and hands
    /// each job's samples to `sink` (on the calling thread) as soon as its requests complete.
    fn sample_streaming(
        &mut self,
        batch: &[PromptJob],
        params: &SamplingParams,
        sink: &mut dyn FnMut(Vec<TeacherSample>) -> bool,
    ) -> Result<(), TeacherError> {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let this = &*self;
        this.pool.restart();
        let workers: usize = this.endpoints.iter().map(|e| e.concurrency).sum();
        let mut first_error = None;
        std::thread::scope(|scope| {
            let (sender, receiver) = mpsc::channel();
            for _ in 0..workers.min(batch.len()) {
                let sender = sender.clone();
                let (next, stop) = (&next, &stop);
                let spawned = std::thread::Builder::new()
                    .stack_size(WORKER_STACK)
                    .spawn_scoped(scope, move || loop {
                        let index = next.fetch_add(1, Ordering::SeqCst);
                        if index >= batch.len() || stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let result = match this.sample_job(index, &batch[index], params) {
                            Ok(Some(samples)) => Ok(samples),
                            Ok(None) => break,
                            Err(error) => Err(error),
                        };
                        if result.is_err() {
                            stop.store(true, Ordering::SeqCst);
                            this.pool.stop();
                        }
                        if sender.send(result).is_err() {
                            break;
                        }
                    });
                if let Err(error) = spawned {
                    first_error.get_or_insert(TeacherError::Config(format!(
                        "cannot start a request thread: {error}"
                    )));
                    stop.store(true, Ordering::SeqCst);
                    this.pool.stop();
                    break;
                }
            }
            drop(sender);
            for result in receiver {
                match result {
                    // Finished samples are delivered even after a failure, so they are kept.
                    Ok(samples) => {
                        if !sink(samples) {
                            stop.store(true, Ordering::SeqCst);
                            this.pool.stop();
                        }
                    }
                    Err(error) => {
                        stop.store(true, Ordering::SeqCst);
                        this.pool.stop();
                        first_error.get_or_insert(error);
                    }
                }
            }
        });
        first_error.map_or(Ok(()), Err)
    }
}

/// Stack of a request thread: it only parses JSON and reads a socket, so thousands of
/// concurrent requests cost little memory.
const WORKER_STACK: usize = 256 * 1024;

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
