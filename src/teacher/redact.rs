//! Keeping credentials out of everything distill writes: rows, summaries, logs and errors.
//!
//! An endpoint teacher knows two secrets: the API key and any `user:password@` in the endpoint
//! URL. [`Redactor`] gives the URL as it may be shown (credentials replaced by `<redacted>`) and
//! scrubs both secrets out of any text before it is shown — an error body from a server that
//! echoes the `Authorization` header included.

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// The secrets of one endpoint and how to hide them.
#[derive(Clone)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secret(s))", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor for an endpoint at `url` called with `api_key`.
    pub fn new(url: &str, api_key: Option<&str>) -> Self {
        let mut secrets: Vec<String> = api_key
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .into_iter()
            .collect();
        if let Some(userinfo) = userinfo(url) {
            secrets.push(userinfo.to_string());
            // The password alone may appear too (e.g. percent-decoded in a library's message).
            if let Some((_, password)) = userinfo.split_once(':') {
                if !password.is_empty() {
                    secrets.push(password.to_string());
                }
            }
        }
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn scrub(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_string(), |text, secret| {
            text.replace(secret, REDACTED)
        })
    }
}

/// The `user:password` of `scheme://user:password@host/…`, when there is one.
fn userinfo(url: &str) -> Option<&str> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?', '#']).next()?;
    authority.rsplit_once('@').map(|(info, _)| info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_and_the_key_are_scrubbed() {
        let r = Redactor::new("http://alice:s3cret@gpu:8000/v1", Some("sk-live-123"));
        assert_eq!(
            r.scrub("POST http://alice:s3cret@gpu:8000/v1: Bearer sk-live-123 (s3cret)"),
            "POST http://<redacted>@gpu:8000/v1: Bearer <redacted> (<redacted>)"
        );
    }

    #[test]
    fn a_url_without_credentials_is_unchanged() {
        let r = Redactor::new("http://gpu:8000/v1?x=a@b", None);
        assert_eq!(r.scrub("http://gpu:8000/v1"), "http://gpu:8000/v1");
    }
}
