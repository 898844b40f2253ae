//! One OpenAI-compatible server: its URL, model name, API key, concurrency, rate limits and
//! prices, and one HTTP attempt against it (`Endpoint::call`), classified as a success or a
//! `Failure` that says whether to retry, whether it counts against the endpoint's health and
//! whether the server asked for a pause. Retrying and choosing endpoints is the teacher's job
//! ([`super::openai`] and its pool).

use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::openai::{endpoint_url, ApiKind};
use super::rate_limit::{server_pause, RateLimiter, RateLimits};
use super::redact::Redactor;
use super::response::{parse_response, snippet, ParsedResponse};
use super::retry::is_retryable_status;
use super::sse::{read_stream, StreamError};
use super::TeacherError;

/// Prices of an endpoint, in dollars (or any currency) per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    /// Per million prompt tokens.
    pub prompt_per_mtok: f64,
    /// Per million completion tokens.
    pub completion_per_mtok: f64,
}

impl Prices {
    /// The cost of `prompt` and `completion` tokens.
    pub fn cost(&self, prompt: f64, completion: f64) -> f64 {
        (prompt * self.prompt_per_mtok + completion * self.completion_per_mtok) / 1e6
    }
}

/// Settings of one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Base URL (`http://host:8000`, `http://host:8000/v1`) or the full endpoint URL.
    pub url: String,
    /// The `model` field of its requests.
    pub model: String,
    /// The environment variable holding its API key (`None`: no `Authorization` header).
    pub api_key_env: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests and tokens per minute.
    pub limits: RateLimits,
    /// Prices, when known: samples then carry their cost.
    pub prices: Option<Prices>,
}

/// How requests wait for their answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transfer {
    /// One JSON body; the whole request (connect, generate, receive) within this timeout.
    Whole(Duration),
    /// Server-sent events (`stream: true`); at most this long between two chunks.
    Stream(Duration),
}

/// One endpoint, ready to call.
pub(super) struct Endpoint {
    agent: ureq::Agent,
    url: String,
    /// `url` with any credentials replaced: what rows, summaries and errors show.
    pub(super) shown_url: String,
    redactor: Redactor,
    pub(super) model: String,
    api_key: Option<String>,
    pub(super) concurrency: usize,
    pub(super) limiter: RateLimiter,
    pub(super) prices: Option<Prices>,
    /// Whether it returns `n` choices when asked; cleared the first time it returns fewer.
    honours_n: AtomicBool,
    /// Whether requests ask for an event stream.
    streams: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.shown_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A failed attempt.
#[derive(Debug)]
pub(super) struct Failure {
    /// What went wrong (credentials scrubbed).
    pub(super) error: TeacherError,
    /// Whether another attempt may succeed.
    pub(super) retryable: bool,
    /// Whether it says the endpoint is unwell (5xx, connection errors, timeouts), as opposed
    /// to busy (429) or a bad request.
    pub(super) unhealthy: bool,
    /// How long the server asked to be left alone.
    pub(super) pause: Option<Duration>,
}

/// A successful attempt.
#[derive(Debug)]
pub(super) struct Success {
    /// The response.
    pub(super) response: ParsedResponse,
    /// How long the server asked to be left alone (a limit it reports as exhausted).
    pub(super) pause: Option<Duration>,
}

impl Endpoint {
    /// An endpoint for `config`; reads its API key from the environment now.
    pub(super) fn new(
        config: &EndpointConfig,
        api: ApiKind,
        transfer: Transfer,
    ) -> Result<Self, TeacherError> {
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
        let url = endpoint_url(&config.url, api);
        let redactor = Redactor::new(&url, api_key.as_deref());
        let shown_url = redactor.scrub(&url);
        let limiter = RateLimiter::new(config.limits)
            .map_err(|e| TeacherError::Config(format!("endpoint {shown_url}: {e}")))?;
        let agent = match transfer {
            Transfer::Whole(timeout) => ureq::AgentBuilder::new().timeout(timeout),
            Transfer::Stream(idle) => ureq::AgentBuilder::new()
                .timeout_connect(idle)
                .timeout_read(idle)
                .timeout_write(idle),
        }
        .build();
        Ok(Endpoint {
            agent,
            url,
            shown_url,
            redactor,
            model: config.model.clone(),
            api_key,
            concurrency: config.concurrency.max(1),
            limiter,
            prices: config.prices,
            honours_n: AtomicBool::new(true),
            streams: matches!(transfer, Transfer::Stream(_)),
        })
    }

    /// Whether the endpoint is believed to return `n` choices when asked.
    pub(super) fn honours_n(&self) -> bool {
        self.honours_n.load(Ordering::Relaxed)
    }

    /// Remembers that the endpoint returned fewer choices than asked.
    pub(super) fn ignores_n(&self) {
        self.honours_n.store(false, Ordering::Relaxed);
    }

    /// Whether requests ask for a streamed response.
    pub(super) fn streams(&self) -> bool {
        self.streams
    }

    /// One attempt: posts `body` (asking for `n` choices) and reads the response, a JSON body
    /// or an event stream (then `on_piece` is called per piece of text received); `attempt`
    /// (1-based) goes into errors.
    pub(super) fn call(
        &self,
        body: &str,
        api: ApiKind,
        n: usize,
        attempt: u32,
        on_piece: &mut dyn FnMut(),
    ) -> Result<Success, Failure> {
        let mut request = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        match request.send_string(body) {
            Ok(response) => {
                let status = response.status();
                let pause = server_pause(|name| response.header(name).map(str::to_string));
                let malformed = |message: String| Failure {
                    error: self.malformed(status, &message),
                    retryable: false,
                    unhealthy: false,
                    pause: None,
                };
                if response.content_type() == "text/event-stream" {
                    let reader = BufReader::new(response.into_reader());
                    let response = read_stream(reader, api, n, on_piece).map_err(|e| match e {
                        StreamError::Io(message) => self.transport(attempt, message, true),
                        StreamError::Server(message) => self.transport(
                            attempt,
                            format!("the server failed mid-stream: {message}"),
                            true,
                        ),
                        StreamError::Malformed(message) => malformed(message),
                    })?;
                    return Ok(Success { response, pause });
                }
                let text = response
                    .into_string()
                    .map_err(|error| self.transport(attempt, error.to_string(), true))?;
                let response = parse_response(&text, api, n).map_err(malformed)?;
                Ok(Success { response, pause })
            }
            Err(ureq::Error::Status(status, response)) => {
                let pause = server_pause(|name| response.header(name).map(str::to_string));
                let text = response.into_string().unwrap_or_default();
                Err(Failure {
                    error: TeacherError::Status {
                        endpoint: self.shown_url.clone(),
                        status,
                        attempts: attempt,
                        message: snippet(&self.redactor.scrub(&text)),
                    },
                    retryable: is_retryable_status(status),
                    unhealthy: status >= 500,
                    pause,
                })
            }
            Err(ureq::Error::Transport(transport)) => Err(self.transport(
                attempt,
                transport.to_string(),
                is_retryable_transport(transport.kind()),
            )),
        }
    }

    /// A 200 whose body is not a usable response.
    pub(super) fn malformed(&self, status: u16, message: &str) -> TeacherError {
        TeacherError::MalformedResponse {
            endpoint: self.shown_url.clone(),
            status,
            message: self.redactor.scrub(message),
        }
    }

    fn transport(&self, attempts: u32, message: String, retryable: bool) -> Failure {
        let prefix = format!("{}: ", self.url);
        let message = message
            .strip_prefix(&prefix)
            .map_or(message.clone(), str::to_string);
        Failure {
            error: TeacherError::Transport {
                endpoint: self.shown_url.clone(),
                attempts,
                message: self.redactor.scrub(&message),
            },
            retryable,
            unhealthy: true,
            pause: None,
        }
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
