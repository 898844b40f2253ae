//! Structural reading of a normalised answer: sets, tuples, intervals,
//! unions, matrices, relations, `\pm` expansions, text answers and plain
//! expressions.
//!
//! Rules (documented policy):
//! * `\{a, b\}` is a set; a top-level comma list `a, b` (several answers) is
//!   also a set, so order is free.
//! * `(a, b, …)` is an ordered tuple; `[a, b]`, `(a, b]`, `[a, b)` are
//!   intervals and `(a, b)` is both a tuple and an open interval.
//! * `A \cup B` is a union of intervals (order-free).
//! * `x = 3` and `x \in [2,5]` (a single variable on the left) mean their
//!   right-hand side; any other `=`, `<`, `\le`, … is a relation, which only
//!   matches a relation.
//! * `a \pm b` is the set `{a + b, a - b}`.
//! * `\text{…}` answers, bare words (`even`, `Evelyn`), choices (`(B)`) and
//!   unparseable answers are text, compared case-insensitively.

use super::expr::{parse_expr, Expr};
use super::normalize::normalize_text_answer;

/// Most elements a set, tuple or matrix may have.
const MAX_ELEMENTS: usize = 64;
/// Deepest nesting of structures (a tuple of sets of tuples …).
const MAX_NESTING: usize = 8;

/// Relation operators, with `>`/`>=` folded into `<`/`<=` by swapping sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rel {
    /// `=`
    Eq,
    /// `\neq`
    Ne,
    /// `<` (and `>` with sides swapped)
    Lt,
    /// `\le` (and `\ge` with sides swapped)
    Le,
}

/// An interval with its closedness.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Interval {
    /// `[` rather than `(`.
    pub left_closed: bool,
    /// Lower end (may be `-\infty`).
    pub lo: Expr,
    /// Upper end (may be `\infty`).
    pub hi: Expr,
    /// `]` rather than `)`.
    pub right_closed: bool,
}

/// A parsed answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// A number or symbolic expression.
    Expr(Expr),
    /// `lhs op rhs` that is not a plain assignment.
    Relation { op: Rel, lhs: Expr, rhs: Expr },
    /// An ordered tuple (point, vector).
    Tuple(Vec<Answer>),
    /// An interval with at least one closed end.
    Interval(Interval),
    /// A union of intervals (order-free).
    Union(Vec<Interval>),
    /// A set or list of several answers (order-free).
    Set(Vec<Answer>),
    /// Matrix rows.
    Matrix(Vec<Vec<Answer>>),
    /// A text answer (see `text_key`).
    Text(String),
}

/// Reads a normalised answer.
pub(crate) fn parse_answer(text: &str) -> Answer {
    parse_nested(text.trim(), 0)
}

fn parse_nested(s: &str, nesting: usize) -> Answer {
    let s = s.trim();
    if nesting > MAX_NESTING || s.is_empty() {
        return text_answer(s);
    }
    let next = nesting + 1;
    if s.starts_with("\\begin{") {
        return parse_matrix(s, next).unwrap_or_else(|| text_answer(s));
    }
    let union_parts = split_top_level(s, "\\cup");
    if union_parts.len() > 1 {
        let intervals: Option<Vec<Interval>> = union_parts
            .iter()
            .map(|p| as_interval(parse_nested(p, next)))
            .collect();
        return intervals.map_or_else(|| text_answer(s), Answer::Union);
    }
    if let Some(inner) = strip_outer(s, "\\{", "\\}") {
        return elements(inner, next).map_or_else(|| text_answer(s), Answer::Set);
    }
    if let Some(bracketed) = parse_bracketed(s, next) {
        return bracketed;
    }
    let list = split_top_level(s, ",");
    if list.len() > 1 {
        return elements(s, next).map_or_else(|| text_answer(s), Answer::Set);
    }
    if let Some((plus, minus)) = expand_plus_minus(s) {
        return Answer::Set(vec![parse_nested(&plus, next), parse_nested(&minus, next)]);
    }
    if let Some(relation) = parse_relation(s, next) {
        return relation;
    }
    if is_word(s) {
        return text_answer(s);
    }
    parse_expr(s).map_or_else(|_| text_answer(s), Answer::Expr)
}

/// A text answer (see [`text_key`]).
fn text_answer(s: &str) -> Answer {
    Answer::Text(text_key(s))
}

/// The comparison key of a text answer: lowercased, without spaces and
/// braces (`4210_{5}` is `4210_5`), a choice `(B)` is `b`.
pub(crate) fn text_key(s: &str) -> String {
    let no_braces: String = s
        .chars()
        .filter(|c| !matches!(c, '{' | '}' | ' '))
        .collect();
    normalize_text_answer(&no_braces)
}

/// Comma-separated elements, each possibly `x = v` or `a \pm b`.
fn elements(s: &str, nesting: usize) -> Option<Vec<Answer>> {
    let parts = split_top_level(s, ",");
    if parts.len() > MAX_ELEMENTS {
        return None;
    }
    let mut out = Vec::with_capacity(parts.len());
    for part in parts.iter().filter(|p| !p.trim().is_empty()) {
        match parse_nested(part.trim(), nesting) {
            Answer::Set(inner) if expand_plus_minus(part).is_some() => out.extend(inner),
            other => out.push(other),
        }
    }
    Some(out)
}

/// `(a, b)`, `[a, b)`, … as tuple or interval; `None` when `s` is not one
/// bracketed list of at least two items.
fn parse_bracketed(s: &str, nesting: usize) -> Option<Answer> {
    let open = s.chars().next()?;
    let close = s.chars().last()?;
    if !matches!(open, '(' | '[') || !matches!(close, ')' | ']') || s.len() < 2 {
        return None;
    }
    let inner = &s[1..s.len() - 1];
    if !closes_at_end(s) {
        return None;
    }
    let parts = split_top_level(inner, ",");
    if parts.len() < 2 || parts.len() > MAX_ELEMENTS {
        return None;
    }
    let is_interval = parts.len() == 2 && (open == '[' || close == ']');
    if is_interval {
        let lo = parse_expr(parts[0].trim()).ok()?;
        let hi = parse_expr(parts[1].trim()).ok()?;
        return Some(Answer::Interval(Interval {
            left_closed: open == '[',
            lo,
            hi,
            right_closed: close == ']',
        }));
    }
    let items = parts
        .iter()
        .map(|p| parse_nested(p.trim(), nesting))
        .collect();
    Some(Answer::Tuple(items))
}

/// The answer as an interval (an open pair `(a, b)` counts).
pub(crate) fn as_interval(answer: Answer) -> Option<Interval> {
    match answer {
        Answer::Interval(i) => Some(i),
        Answer::Tuple(items) if items.len() == 2 => {
            let mut it = items.into_iter();
            match (it.next(), it.next()) {
                (Some(Answer::Expr(lo)), Some(Answer::Expr(hi))) => Some(Interval {
                    left_closed: false,
                    lo,
                    hi,
                    right_closed: false,
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `\begin{pmatrix} a & b \\ c & d \end{pmatrix}` (any `*matrix`).
fn parse_matrix(s: &str, nesting: usize) -> Option<Answer> {
    let after_begin = s.strip_prefix("\\begin{")?;
    let env_end = after_begin.find('}')?;
    let env = &after_begin[..env_end];
    if !env.ends_with("matrix") {
        return None;
    }
    let body = after_begin[env_end + 1..].strip_suffix(&format!("\\end{{{env}}}"))?;
    let rows: Vec<&str> = body
        .split("\\\\")
        .filter(|r| !r.trim().is_empty())
        .collect();
    if rows.is_empty() || rows.len() > MAX_ELEMENTS {
        return None;
    }
    let mut matrix = Vec::with_capacity(rows.len());
    for row in rows {
        let cells: Vec<Answer> = row
            .split('&')
            .map(|c| parse_nested(c.trim(), nesting))
            .collect();
        if cells.len() > MAX_ELEMENTS {
            return None;
        }
        matrix.push(cells);
    }
    Some(Answer::Matrix(matrix))
}

/// `a \pm b` as (`a + b`, `a - b`) when there is exactly one `\pm`/`\mp`.
fn expand_plus_minus(s: &str) -> Option<(String, String)> {
    let count = s.matches("\\pm").count() + s.matches("\\mp").count();
    if count != 1 {
        return None;
    }
    let (cmd, first, second) = if s.contains("\\pm") {
        ("\\pm", "+", "-")
    } else {
        ("\\mp", "-", "+")
    };
    Some((s.replacen(cmd, first, 1), s.replacen(cmd, second, 1)))
}

/// `x = v` (single variable on the left) reads as `v`; `x \in S` as `S`;
/// other single relations become [`Answer::Relation`].
fn parse_relation(s: &str, nesting: usize) -> Option<Answer> {
    let ops = relation_positions(s);
    let &(first_at, first_op, first_len) = ops.first()?;
    let lhs = s[..first_at].trim();
    if matches!(first_op, RelOp::Eq | RelOp::In) && is_identifier(lhs) {
        let &(last_at, _, last_len) = ops.last()?;
        return Some(parse_nested(s[last_at + last_len..].trim(), nesting));
    }
    if ops.len() != 1 || first_op == RelOp::In {
        return Some(text_answer(s));
    }
    let rhs = s[first_at + first_len..].trim();
    let (Ok(l), Ok(r)) = (parse_expr(lhs), parse_expr(rhs)) else {
        return Some(text_answer(s));
    };
    Some(match first_op {
        RelOp::Eq => Answer::Relation {
            op: Rel::Eq,
            lhs: l,
            rhs: r,
        },
        RelOp::Ne => Answer::Relation {
            op: Rel::Ne,
            lhs: l,
            rhs: r,
        },
        RelOp::Lt => Answer::Relation {
            op: Rel::Lt,
            lhs: l,
            rhs: r,
        },
        RelOp::Le => Answer::Relation {
            op: Rel::Le,
            lhs: l,
            rhs: r,
        },
        RelOp::Gt => Answer::Relation {
            op: Rel::Lt,
            lhs: r,
            rhs: l,
        },
        RelOp::Ge => Answer::Relation {
            op: Rel::Le,
            lhs: r,
            rhs: l,
        },
        RelOp::In => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

/// Top-level relation operators as (byte offset, operator, byte length).
fn relation_positions(s: &str) -> Vec<(usize, RelOp, usize)> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < bytes.len() {
        let next = bytes.get(i + 1).copied();
        let found = match bytes[i] {
            b'(' | b'[' | b'{' => {
                depth += 1;
                None
            }
            b')' | b']' | b'}' => {
                depth -= 1;
                None
            }
            _ if depth != 0 => None,
            b'<' if next == Some(b'=') => Some((RelOp::Le, 2)),
            b'>' if next == Some(b'=') => Some((RelOp::Ge, 2)),
            b'!' if next == Some(b'=') => Some((RelOp::Ne, 2)),
            b'<' => Some((RelOp::Lt, 1)),
            b'>' => Some((RelOp::Gt, 1)),
            b'=' => Some((RelOp::Eq, 1)),
            b'\\'
                if bytes[i..].starts_with(b"\\in")
                    && !bytes.get(i + 3).is_some_and(u8::is_ascii_alphabetic) =>
            {
                Some((RelOp::In, 3))
            }
            _ => None,
        };
        match found {
            Some((op, len)) => {
                out.push((i, op, len));
                i += len;
            }
            None => i += 1,
        }
    }
    out
}

/// A single variable: one letter or a Greek command, optionally subscripted.
fn is_identifier(s: &str) -> bool {
    let name = s.split_once('_').map_or(s, |(n, _)| n);
    let letters = name.strip_prefix('\\').unwrap_or(name);
    let is_single = name.len() == 1 && name.chars().all(|c| c.is_ascii_alphabetic());
    let is_command = name.starts_with('\\') && letters.chars().all(|c| c.is_ascii_alphabetic());
    !letters.is_empty() && (is_single || is_command)
}

/// A bare word of two or more letters (`even`, `Evelyn`), or a choice `(B)`.
fn is_word(s: &str) -> bool {
    let letters = s.trim_start_matches('(').trim_end_matches(')');
    let is_choice = s.starts_with('(') && letters.len() == 1;
    let all_letters = !letters.is_empty() && letters.chars().all(|c| c.is_alphabetic() || c == ' ');
    all_letters && (letters.chars().count() >= 2 || is_choice) && !is_function_word(letters)
}

fn is_function_word(s: &str) -> bool {
    [
        "sin", "cos", "tan", "sec", "csc", "cot", "ln", "log", "exp", "pi",
    ]
    .iter()
    .any(|f| s.starts_with(f))
}

/// `s` without `open`/`close` when they enclose the whole string.
fn strip_outer<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let inner = s.strip_prefix(open)?.strip_suffix(close)?;
    closes_at_end(s.strip_prefix('\\').unwrap_or(s)).then_some(inner)
}

/// The bracket opened at the first character closes at the last one.
fn closes_at_end(s: &str) -> bool {
    let mut depth = 0i32;
    let last = s.len().saturating_sub(1);
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth <= 0 && i < last {
            return false;
        }
    }
    depth == 0
}

/// Splits `s` at `sep` where no bracket is open.
pub(crate) fn split_top_level<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && bytes[i..].starts_with(sep.as_bytes()) {
            parts.push(&s[start..i]);
            i += sep.len();
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}
