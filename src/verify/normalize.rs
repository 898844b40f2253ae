//! String-level normalisation of an answer before it is parsed: removes
//! presentation-only LaTeX (`$`, `\left`, spacing, `\dfrac`, degrees,
//! currency, units in `\text{}`) and canonicalises separators, so that the
//! structural parser in `answer` only sees mathematical content.

use super::extract::matching_brace;

/// An answer after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Normalized {
    /// The normalised text (single spaces, no wrappers).
    pub text: String,
    /// A `%` sign was removed.
    pub percent: bool,
    /// The whole answer was a `\text{}` block without digits: compare as text.
    pub is_text: bool,
}

/// Commands whose content is kept when they are not the whole answer.
const TEXT_COMMANDS: [&str; 8] = [
    "\\textbf",
    "\\textrm",
    "\\textit",
    "\\textnormal",
    "\\text",
    "\\mbox",
    "\\mathrm",
    "\\hbox",
];
/// Commands that only change typeface: unwrapped everywhere.
const FACE_COMMANDS: [&str; 5] = ["\\mathbf", "\\mathit", "\\boldsymbol", "\\mathsf", "\\bm"];
/// Lowercase words treated as trailing units (`5 cm`, `12 dollars`).
const FUNCTION_WORDS: [&str; 14] = [
    "sin", "cos", "tan", "sec", "csc", "cot", "log", "ln", "exp", "pi", "sqrt", "arcsin", "arccos",
    "arctan",
];

/// Normalises `raw` (see the module doc).
pub(crate) fn normalize(raw: &str) -> Normalized {
    let mut s = unicode_to_latex(raw.trim());
    s = unwrap_outer_boxed(&s);
    s = s.replace("\\$", " ").replace('$', " ");
    s = remove_sizing_commands(&s);
    s = replace_spacing(&s);
    for (from, to) in [
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\cfrac", "\\frac"),
    ] {
        s = replace_command(&s, from, to);
    }
    s = replace_command(&s, "\\displaystyle", " ");
    s = remove_degrees(&s);
    let percent = s.contains('%');
    s = s.replace("\\%", " ").replace('%', " ");
    if let Some(inner) = whole_text_command(s.trim()) {
        if !inner.chars().any(|c| c.is_ascii_digit()) {
            return Normalized {
                text: normalize_text_answer(inner),
                percent,
                is_text: true,
            };
        }
        s = inner.to_string();
    }
    s = rewrite_text_commands(&s);
    s = replace_relations(&s);
    s = collapse_whitespace(&s);
    s = strip_trailing_punctuation(&s);
    s = strip_trailing_unit_words(&s);
    s = join_thousands(&s);
    s = plain_mixed_number(&s);
    Normalized {
        text: s,
        percent,
        is_text: false,
    }
}

/// Lowercased, trimmed text answer; `(B)` becomes `b`.
pub(crate) fn normalize_text_answer(text: &str) -> String {
    let t = collapse_whitespace(text).to_lowercase();
    let t = t.trim().trim_end_matches('.').trim();
    let t = t
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .filter(|x| x.chars().count() == 1)
        .unwrap_or(t);
    t.to_string()
}

/// Unicode math symbols to their LaTeX spelling.
fn unicode_to_latex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '−' | '–' => out.push('-'),
            '×' => out.push_str("\\times "),
            '·' | '⋅' => out.push_str("\\cdot "),
            '÷' => out.push_str("\\div "),
            'π' => out.push_str("\\pi "),
            '∞' => out.push_str("\\infty "),
            '√' => out.push_str("\\sqrt"),
            '≤' => out.push_str("\\le "),
            '≥' => out.push_str("\\ge "),
            '≠' => out.push_str("\\ne "),
            '±' => out.push_str("\\pm "),
            '∪' => out.push_str("\\cup "),
            '°' => out.push_str("^\\circ "),
            '\u{a0}' | '\u{2009}' | '\u{202f}' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// `\boxed{x}` (the whole string) becomes `x`.
fn unwrap_outer_boxed(s: &str) -> String {
    for cmd in ["\\boxed{", "\\fbox{"] {
        if let Some(rest) = s.strip_prefix(cmd) {
            if let Some(end) = matching_brace(rest) {
                if rest[end + 1..].trim().is_empty() {
                    return rest[..end].to_string();
                }
            }
        }
    }
    s.to_string()
}

/// Replaces the command `name` by `repl` where it is not the prefix of a
/// longer command (`\le` does not match inside `\left`).
pub(crate) fn replace_command(s: &str, name: &str, repl: &str) -> String {
    let ends_in_letter = name.chars().last().is_some_and(|c| c.is_ascii_alphabetic());
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(name) {
        let after = &rest[at + name.len()..];
        let is_prefix = ends_in_letter && after.starts_with(|c: char| c.is_ascii_alphabetic());
        out.push_str(&rest[..at]);
        out.push_str(if is_prefix { name } else { repl });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Drops `\left`, `\right` and `\big`-style sizing (with a `.` null delimiter).
fn remove_sizing_commands(s: &str) -> String {
    let mut out = s.to_string();
    for name in ["\\left.", "\\right."] {
        out = out.replace(name, " ");
    }
    for name in [
        "\\left", "\\right", "\\bigl", "\\bigr", "\\Bigl", "\\Bigr", "\\biggl", "\\biggr", "\\big",
        "\\Big", "\\bigg", "\\Bigg",
    ] {
        out = replace_command(&out, name, "");
    }
    out
}

/// LaTeX spacing commands (`\,` `\;` `\:` `\ ` `~` `\quad`) become a space
/// and `\!` disappears; a `\\` line break is kept as it is.
fn replace_spacing(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('\\', Some('\\')) => {
                chars.next();
                out.push_str("\\\\");
            }
            ('\\', Some('!')) => {
                chars.next();
            }
            ('\\', Some(',' | ';' | ':' | ' ')) => {
                chars.next();
                out.push(' ');
            }
            ('~', _) => out.push(' '),
            _ => out.push(c),
        }
    }
    for name in ["\\qquad", "\\quad", "\\enspace", "\\thinspace"] {
        out = replace_command(&out, name, " ");
    }
    out
}

/// Removes degree marks: `^\circ`, `^{\circ}`, `\circ`, `\degree`.
fn remove_degrees(s: &str) -> String {
    let mut out = s.replace("^{\\circ}", " ").replace("^\\circ", " ");
    out = replace_command(&out, "\\circ", " ");
    replace_command(&out, "\\degree", " ")
}

/// `Some(inner)` when `s` is exactly one text command: `\text{inner}`.
fn whole_text_command(s: &str) -> Option<&str> {
    let (name_len, _) = find_text_command(s).filter(|&(_, at)| at == 0)?;
    let body = s[name_len..].trim_start().strip_prefix('{')?;
    let end = matching_brace(body)?;
    body[end + 1..]
        .trim()
        .is_empty()
        .then(|| body[..end].trim())
}

/// Length of the name and position of the first text/face command in `s`.
fn find_text_command(s: &str) -> Option<(usize, usize)> {
    TEXT_COMMANDS
        .iter()
        .chain(FACE_COMMANDS.iter())
        .filter_map(|name| {
            s.match_indices(name)
                .find(|(at, _)| s[at + name.len()..].trim_start().starts_with('{'))
                .map(|(at, _)| (name.len(), at))
        })
        .min_by_key(|&(_, at)| at)
}

/// Rewrites text commands inside a larger answer: `\text{ or }`/`\text{and}`
/// become a comma, alphabetic content (a unit) is dropped together with a
/// following `^2`, anything else is unwrapped.
fn rewrite_text_commands(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some((name_len, at)) = find_text_command(rest) {
        let name = &rest[at..at + name_len];
        out.push_str(&rest[..at]);
        let body_start = rest[at + name_len..].trim_start();
        let Some(body) = body_start.strip_prefix('{') else {
            break;
        };
        let Some(end) = matching_brace(body) else {
            rest = body;
            continue;
        };
        let inner = body[..end].trim();
        let mut after = &body[end + 1..];
        let is_face = FACE_COMMANDS.contains(&name);
        let lowered = inner.to_ascii_lowercase();
        if lowered == "or" || lowered == "and" {
            out.push_str(", ");
        } else if !is_face && is_unit_text(inner) {
            out.push(' ');
            after = skip_unit_exponent(after);
        } else {
            out.push(' ');
            out.push_str(inner);
            out.push(' ');
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Alphabetic words (a unit or a remark such as `cm` or `square units`).
fn is_unit_text(inner: &str) -> bool {
    !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_alphabetic() || c == ' ' || c == '.' || c == '-')
        && inner.chars().any(|c| c.is_alphabetic())
}

/// Skips `^2` / `^{2}` after a unit (`\text{cm}^2`).
fn skip_unit_exponent(s: &str) -> &str {
    let Some(exp) = s.trim_start().strip_prefix('^') else {
        return s;
    };
    if let Some(group) = exp.strip_prefix('{') {
        return matching_brace(group).map_or(s, |end| &group[end + 1..]);
    }
    exp.strip_prefix(|c: char| c.is_ascii_digit()).unwrap_or(s)
}

/// Relation commands to ASCII operators.
fn replace_relations(s: &str) -> String {
    let mut out = s.to_string();
    for (name, op) in [
        ("\\leqslant", "<="),
        ("\\geqslant", ">="),
        ("\\leq", "<="),
        ("\\geq", ">="),
        ("\\le", "<="),
        ("\\ge", ">="),
        ("\\neq", "!="),
        ("\\ne", "!="),
        ("\\lt", "<"),
        ("\\gt", ">"),
    ] {
        out = replace_command(&out, name, op);
    }
    out
}

/// Trims and collapses whitespace runs to one space.
pub(crate) fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Drops a trailing `.`, `,` or `;` (not an escaped `\.`).
fn strip_trailing_punctuation(s: &str) -> String {
    let mut t = s.trim();
    while let Some(stripped) = t.strip_suffix(['.', ',', ';']) {
        if stripped.ends_with('\\') {
            break;
        }
        t = stripped.trim_end();
    }
    t.to_string()
}

/// Drops trailing plain-text unit words after a number (`5 cm`, `12 square
/// feet`); words of one letter and function names are kept.
fn strip_trailing_unit_words(s: &str) -> String {
    let mut words: Vec<&str> = s.split(' ').collect();
    let mut removed = false;
    while words.len() > 1 {
        let last = words[words.len() - 1];
        let word = last
            .strip_suffix("^2")
            .or(last.strip_suffix("^3"))
            .unwrap_or(last);
        let is_unit = word.len() >= 2
            && word.chars().all(|c| c.is_ascii_lowercase())
            && !FUNCTION_WORDS.contains(&word);
        if !is_unit {
            break;
        }
        words.pop();
        removed = true;
    }
    let ends_with_number = words
        .last()
        .and_then(|w| w.chars().last())
        .is_some_and(|c| c.is_ascii_digit() || c == '}' || c == ')');
    if removed && ends_with_number {
        words.join(" ")
    } else {
        s.to_string()
    }
}

/// `1,000,000`, `1 000` and `10,080.5` lose their thousands separators when
/// they are the whole answer.
fn join_thousands(s: &str) -> String {
    let (sign, body) = s.strip_prefix('-').map_or(("", s), |b| ("-", b));
    let (int_part, frac) = body
        .split_once('.')
        .map_or((body, None), |(i, f)| (i, Some(f)));
    let sep = if int_part.contains(',') { ',' } else { ' ' };
    let groups: Vec<&str> = int_part.split(sep).map(str::trim).collect();
    let all_digits = |g: &str| !g.is_empty() && g.chars().all(|c| c.is_ascii_digit());
    let well_formed = groups.len() > 1
        && groups.iter().all(|g| all_digits(g))
        && groups[0].len() <= 3
        && groups[1..].iter().all(|g| g.len() == 3)
        && frac.is_none_or(all_digits);
    if !well_formed {
        return s.to_string();
    }
    let mut out = format!("{sign}{}", groups.concat());
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// `2 1/2` (the whole answer) becomes `2\frac{1}{2}`, a mixed number.
fn plain_mixed_number(s: &str) -> String {
    let (sign, body) = s.strip_prefix('-').map_or(("", s), |b| ("-", b));
    let Some((whole, frac)) = body.split_once(' ') else {
        return s.to_string();
    };
    let Some((num, den)) = frac.split_once('/') else {
        return s.to_string();
    };
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    if digits(whole) && digits(num) && digits(den) {
        format!("{sign}{whole}\\frac{{{num}}}{{{den}}}")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_presentation() {
        assert_eq!(
            normalize("$\\left( 3, \\frac{\\pi}{2} \\right)$").text,
            "( 3, \\frac{\\pi}{2} )"
        );
        assert_eq!(normalize("10,\\!080").text, "10080");
        assert_eq!(normalize("11,\\! 111,\\! 111,\\! 100").text, "11111111100");
        assert_eq!(normalize("15\\mbox{ cm}^2").text, "15");
        assert_eq!(normalize("30^\\circ").text, "30");
        assert_eq!(normalize("\\$32,\\!348").text, "32348");
        assert_eq!(normalize("5 \\text{ cm}").text, "5");
        assert_eq!(normalize("12 square feet").text, "12");
        assert_eq!(normalize("2 1/2").text, "2\\frac{1}{2}");
        assert_eq!(normalize("1 \\text{ or } 2").text, "1 , 2");
    }

    #[test]
    fn text_answers() {
        let n = normalize("\\text{(B)}");
        assert!(n.is_text);
        assert_eq!(n.text, "b");
        assert!(normalize("10\\%").percent);
    }
}
