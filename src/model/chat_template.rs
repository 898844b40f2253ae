//! Chat templates: the Jinja `chat_template` of `tokenizer_config.json`, rendered with minijinja the
//! way transformers' `apply_chat_template` renders it (trim_blocks, lstrip_blocks, Python string
//! methods, `raise_exception`, `tojson`), and ChatML for models that ship none.

use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use super::error::{ModelError, Result};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl Message {
    /// A turn with the given role.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.to_string(),
            content: content.into(),
        }
    }

    /// A `user` turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// What to render besides the messages.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// Append the header that opens the assistant's turn.
    pub add_generation_prompt: bool,
    /// Qwen3's switch; `None` leaves it undefined, as transformers does when the caller omits it.
    pub enable_thinking: Option<bool>,
}

/// The ChatML template used when a tokenizer has no `chat_template` of its own.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A compiled chat template with the special-token strings it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    origin: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    /// Compiles `source`; `origin` names the file it came from in errors.
    pub fn new(
        source: &str,
        origin: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| template_error(origin, e))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |format: String| chrono_free_date(&format));
        env.add_filter("tojson", to_json);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| template_error(origin, e))?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            origin: origin.to_string(),
            bos_token,
            eos_token,
        })
    }

    /// ChatML, for tokenizers without a template.
    pub fn chatml(bos_token: Option<String>, eos_token: Option<String>) -> Self {
        Self::new(CHATML_TEMPLATE, "built-in ChatML", bos_token, eos_token)
            .unwrap_or_else(|e| unreachable!("the built-in ChatML template compiles: {e}"))
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` to the prompt string the model sees.
    pub fn render(&self, messages: &[Message], options: &ChatOptions) -> Result<String> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| template_error(&self.origin, e))?;
        let mut context = std::collections::BTreeMap::new();
        context.insert("messages", Value::from(minijinja::value::Serde(messages)));
        context.insert(
            "add_generation_prompt",
            Value::from(options.add_generation_prompt),
        );
        context.insert(
            "bos_token",
            Value::from(self.bos_token.clone().unwrap_or_default()),
        );
        context.insert(
            "eos_token",
            Value::from(self.eos_token.clone().unwrap_or_default()),
        );
        if let Some(thinking) = options.enable_thinking {
            context.insert("enable_thinking", Value::from(thinking));
        }
        template
            .render(context)
            .map_err(|e| template_error(&self.origin, e))
    }
}

fn template_error(origin: &str, e: minijinja::Error) -> ModelError {
    let mut message = e.to_string();
    if let Some(detail) = e.detail() {
        message = format!("{message} ({detail})");
    }
    ModelError::Template {
        origin: origin.to_string(),
        message,
    }
}

/// Jinja's `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False)`, optionally indented.
fn to_json(value: Value, indent: Option<usize>) -> std::result::Result<Value, minijinja::Error> {
    let json: serde_json::Value = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let text = match indent {
        Some(n) => {
            let indent = " ".repeat(n);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
            let mut out = Vec::new();
            let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(&json, &mut serializer)
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            String::from_utf8_lossy(&out).into_owned()
        }
        None => python_compact_json(&json),
    };
    Ok(Value::from_safe_string(text))
}

/// `json.dumps` default separators: `", "` and `": "`.
fn python_compact_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(python_compact_json).collect();
            format!("[{}]", parts.join(", "))
        }
        serde_json::Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}: {}",
                        serde_json::Value::String(k.clone()),
                        python_compact_json(v)
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// `strftime_now` for templates that print today's date (Llama 3.x): supports the `%d %b %Y` family
/// from the system clock in UTC.
fn chrono_free_date(format: &str) -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const FULL: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month_index = (month - 1) as usize;
    format
        .replace("%d", &format!("{day:02}"))
        .replace("%m", &format!("{month:02}"))
        .replace("%Y", &year.to_string())
        .replace("%B", FULL[month_index])
        .replace("%b", MONTHS[month_index])
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
