//! Mathematical equivalence of a predicted answer to a gold answer.
//!
//! The check is asymmetric (gold first): the gold answer decides the kind of
//! object expected, so echoing a relation from the question is not rewarded
//! (gold `3`, prediction `x > 2` fails) while `x = 3` for gold `3` passes.
//!
//! Policy, in short (see also the `answer` and `expr` module docs):
//! * Exact arithmetic first: when both sides are rational numbers built from
//!   literals (integers, decimals, fractions, powers with small integer
//!   exponents) they must be exactly equal, so `1000000 ≢ 1000001`.
//! * Otherwise both sides are evaluated in complex `f64`, at several seeded
//!   random points for the free variables (values in `[0.3, 2.3)`), and must
//!   agree within [`VerifyOptions::relative_tolerance`] (default `1e-6`,
//!   with an absolute floor of `1e-9`) at every point where both are defined.
//! * Percent: `10\%` equals `10`; it equals `0.1` only with
//!   [`VerifyOptions::percent_as_fraction`].
//! * Sets and several comma-separated answers are order-free; tuples are
//!   ordered; intervals compare endpoints and closedness; equations compare
//!   `lhs - rhs` up to a non-zero constant factor.
//! * Answers longer than [`MAX_NORMALIZED_CHARS`] after normalisation are
//!   never equivalent (bounded time).

use std::collections::BTreeSet;

use super::answer::{as_interval, parse_answer, text_key, Answer, Interval, Rel};
use super::expr::{Complex, Constant, Expr};
use super::normalize::{normalize, Normalized};

/// Longest normalised answer (in chars) that is compared at all.
pub const MAX_NORMALIZED_CHARS: usize = 2_000;
/// Longest raw answer (in bytes) that is normalised at all.
const MAX_RAW_BYTES: usize = 200_000;
/// Random evaluation points for expressions with variables.
const EVAL_POINTS: u64 = 6;
/// Points that must succeed for a symbolic match.
const MIN_GOOD_POINTS: usize = 3;
/// Most distinct variables a symbolic comparison handles.
const MAX_VARIABLES: usize = 16;
/// Absolute tolerance floor for inexact comparisons.
const ABSOLUTE_TOLERANCE: f64 = 1e-9;

/// Options for [`verify_with`] and [`check`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerifyOptions {
    /// When true, a percentage also equals its fraction (`10\%` ≡ `0.1`).
    /// Default false: `10\%` ≡ `10` only.
    pub percent_as_fraction: bool,
    /// Relative tolerance for inexact (irrational or symbolic) comparisons.
    /// Default `1e-6`.
    pub relative_tolerance: f64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            percent_as_fraction: false,
            relative_tolerance: 1e-6,
        }
    }
}

/// How a verdict was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Match {
    /// Identical after normalisation.
    SameText,
    /// Equal numbers (exactly or within tolerance).
    Numeric,
    /// Equal expressions at every random evaluation point.
    Symbolic,
    /// Equal sets, tuples, intervals, matrices or relations.
    Structure,
    /// Equal text answers (case-insensitive).
    Text,
    /// Compared and found different.
    Different,
    /// The gold or predicted answer is empty.
    Empty,
    /// An answer exceeds [`MAX_NORMALIZED_CHARS`].
    TooLong,
}

impl Match {
    /// Stable snake_case name, for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Match::SameText => "same_text",
            Match::Numeric => "numeric",
            Match::Symbolic => "symbolic",
            Match::Structure => "structure",
            Match::Text => "text",
            Match::Different => "different",
            Match::Empty => "empty",
            Match::TooLong => "too_long",
        }
    }
}

/// The outcome of [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The prediction is equivalent to the gold answer.
    pub equivalent: bool,
    /// Why.
    pub how: Match,
}

/// `true` when `predicted` is equivalent to `gold` under default options.
pub fn verify(gold: &str, predicted: &str) -> bool {
    check(gold, predicted, &VerifyOptions::default()).equivalent
}

/// `true` when `predicted` is equivalent to `gold` under `options`.
pub fn verify_with(gold: &str, predicted: &str, options: &VerifyOptions) -> bool {
    check(gold, predicted, options).equivalent
}

/// Compares `predicted` to `gold` and says how the verdict was reached.
pub fn check(gold: &str, predicted: &str, options: &VerifyOptions) -> Verdict {
    if gold.len() > MAX_RAW_BYTES || predicted.len() > MAX_RAW_BYTES {
        return Verdict::different(Match::TooLong);
    }
    let (g, p) = (normalize(gold), normalize(predicted));
    if g.text.is_empty() || p.text.is_empty() {
        return Verdict::different(Match::Empty);
    }
    let too_long = |n: &Normalized| n.text.chars().count() > MAX_NORMALIZED_CHARS;
    if too_long(&g) || too_long(&p) {
        return Verdict::different(Match::TooLong);
    }
    if compact(&g.text) == compact(&p.text) && g.is_text == p.is_text {
        return Verdict::equivalent(Match::SameText);
    }
    let percent_rescaling = options.percent_as_fraction && (g.percent || p.percent);
    if let (Some(a), Some(b)) = (integer_digits(&g.text), integer_digits(&p.text)) {
        if !percent_rescaling {
            return if a == b {
                Verdict::equivalent(Match::Numeric)
            } else {
                Verdict::different(Match::Different)
            };
        }
    }
    let gold_answer = read(&g);
    let cmp = Comparer { options };
    if cmp.top_level(&gold_answer, &g, &read(&p), &p) {
        Verdict::equivalent(kind_of(&gold_answer))
    } else {
        Verdict::different(Match::Different)
    }
}

impl Verdict {
    fn equivalent(how: Match) -> Self {
        Verdict {
            equivalent: true,
            how,
        }
    }

    fn different(how: Match) -> Self {
        Verdict {
            equivalent: false,
            how,
        }
    }
}

fn read(n: &Normalized) -> Answer {
    if n.is_text {
        Answer::Text(text_key(&n.text))
    } else {
        parse_answer(&n.text)
    }
}

/// A plain integer literal as (is negative, digits without leading zeros),
/// compared exactly whatever its size.
fn integer_digits(s: &str) -> Option<(bool, &str)> {
    let (negative, digits) = s.strip_prefix('-').map_or((false, s), |d| (true, d));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() {
        (false, "0")
    } else {
        (negative, trimmed)
    })
}

fn compact(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn kind_of(answer: &Answer) -> Match {
    match answer {
        Answer::Expr(e) => {
            let mut vars = BTreeSet::new();
            e.variables(&mut vars);
            if vars.is_empty() {
                Match::Numeric
            } else {
                Match::Symbolic
            }
        }
        Answer::Text(_) => Match::Text,
        _ => Match::Structure,
    }
}

struct Comparer<'a> {
    options: &'a VerifyOptions,
}

impl Comparer<'_> {
    /// Top level: text answers compare with the prediction's text, and the
    /// percent policy applies to plain numbers.
    fn top_level(&self, g: &Answer, gn: &Normalized, p: &Answer, pn: &Normalized) -> bool {
        match (g, p) {
            (Answer::Text(gt), _) => *gt == text_key(&pn.text),
            (Answer::Expr(ge), Answer::Expr(pe)) => {
                self.expr_with_percent(ge, gn.percent, pe, pn.percent)
            }
            _ => self.answers(g, p),
        }
    }

    fn expr_with_percent(&self, g: &Expr, g_percent: bool, p: &Expr, p_percent: bool) -> bool {
        if self.exprs(g, p) {
            return true;
        }
        if !self.options.percent_as_fraction {
            return false;
        }
        let hundredth = |e: &Expr| Expr::Div(Box::new(e.clone()), Box::new(hundred()));
        (g_percent && self.exprs(&hundredth(g), p)) || (p_percent && self.exprs(g, &hundredth(p)))
    }

    fn answers(&self, g: &Answer, p: &Answer) -> bool {
        match (g, p) {
            (Answer::Expr(a), Answer::Expr(b)) => self.exprs(a, b),
            (Answer::Text(a), Answer::Text(b)) => a == b,
            (Answer::Set(a), Answer::Set(b)) => self.sets(a, b, |x, y| self.answers(x, y)),
            (Answer::Set(a), other) if a.len() == 1 => self.answers(&a[0], other),
            (other, Answer::Set(b)) if b.len() == 1 => self.answers(other, &b[0]),
            (Answer::Tuple(a), Answer::Tuple(b)) => self.sequences(a, b),
            (Answer::Relation { op, lhs, rhs }, Answer::Tuple(_) | Answer::Interval(_)) => {
                let a = ray(*op, lhs, rhs);
                as_interval(p.clone()).is_some_and(|b| a.is_some_and(|a| self.intervals(&a, &b)))
            }
            (Answer::Interval(a), Answer::Relation { op, lhs, rhs }) => {
                ray(*op, lhs, rhs).is_some_and(|b| self.intervals(a, &b))
            }
            (Answer::Interval(a), _) => {
                as_interval(p.clone()).is_some_and(|b| self.intervals(a, &b))
            }
            (Answer::Tuple(_), Answer::Interval(b)) => {
                as_interval(g.clone()).is_some_and(|a| self.intervals(&a, b))
            }
            (Answer::Union(a), Answer::Union(b)) => self.sets(a, b, |x, y| self.intervals(x, y)),
            (Answer::Matrix(a), Answer::Matrix(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(r, s)| self.sequences(r, s))
            }
            (Answer::Matrix(a), Answer::Tuple(b)) => {
                vector(a).is_some_and(|v| self.sequences(&v, b))
            }
            (Answer::Tuple(a), Answer::Matrix(b)) => {
                vector(b).is_some_and(|v| self.sequences(a, &v))
            }
            (
                Answer::Relation { op, lhs, rhs },
                Answer::Relation {
                    op: pop,
                    lhs: plhs,
                    rhs: prhs,
                },
            ) => op == pop && self.relations(*op, (lhs, rhs), (plhs, prhs)),
            _ => false,
        }
    }

    fn sequences(&self, a: &[Answer], b: &[Answer]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| self.answers(x, y))
    }

    /// Set equality: every gold item matches some predicted item and back.
    fn sets<T>(&self, a: &[T], b: &[T], same: impl Fn(&T, &T) -> bool) -> bool {
        !a.is_empty()
            && !b.is_empty()
            && a.iter().all(|x| b.iter().any(|y| same(x, y)))
            && b.iter().all(|y| a.iter().any(|x| same(x, y)))
    }

    fn intervals(&self, a: &Interval, b: &Interval) -> bool {
        a.left_closed == b.left_closed
            && a.right_closed == b.right_closed
            && self.exprs(&a.lo, &b.lo)
            && self.exprs(&a.hi, &b.hi)
    }

    fn relations(&self, op: Rel, g: (&Expr, &Expr), p: (&Expr, &Expr)) -> bool {
        match op {
            Rel::Eq => self.proportional(&difference(g), &difference(p)),
            Rel::Ne => {
                (self.exprs(g.0, p.0) && self.exprs(g.1, p.1))
                    || (self.exprs(g.0, p.1) && self.exprs(g.1, p.0))
            }
            Rel::Lt | Rel::Le => self.exprs(g.0, p.0) && self.exprs(g.1, p.1),
        }
    }

    /// Expression equivalence (exact, numeric, or at random points).
    fn exprs(&self, g: &Expr, p: &Expr) -> bool {
        if g.infinity_sign().is_some() || p.infinity_sign().is_some() {
            return g.infinity_sign() == p.infinity_sign();
        }
        if let (Some(a), Some(b)) = (g.exact(), p.exact()) {
            return a == b;
        }
        self.agree_at_points(g, p, |a, b| self.close(a, b))
    }

    /// `p = c · g` for one non-zero constant `c` at every point.
    fn proportional(&self, g: &Expr, p: &Expr) -> bool {
        let mut ratio: Option<Complex> = None;
        self.agree_at_points(g, p, |a, b| {
            let (a_zero, b_zero) = (a.abs() <= ABSOLUTE_TOLERANCE, b.abs() <= ABSOLUTE_TOLERANCE);
            if a_zero || b_zero {
                return a_zero && b_zero;
            }
            let r = b.div(a);
            match ratio {
                Some(r0) => self.close(r0, r),
                None => {
                    ratio = Some(r);
                    true
                }
            }
        })
    }

    /// Evaluates both sides at seeded points; `same` must hold at each point
    /// where both are defined, and enough points must be defined.
    fn agree_at_points(
        &self,
        g: &Expr,
        p: &Expr,
        mut same: impl FnMut(Complex, Complex) -> bool,
    ) -> bool {
        let mut vars = BTreeSet::new();
        g.variables(&mut vars);
        p.variables(&mut vars);
        if vars.len() > MAX_VARIABLES {
            return false;
        }
        let points = if vars.is_empty() { 1 } else { EVAL_POINTS };
        let needed = if vars.is_empty() { 1 } else { MIN_GOOD_POINTS };
        let mut good = 0;
        for point in 0..points {
            let env = |name: &str| {
                vars.contains(name).then(|| Complex {
                    re: sample(name, point),
                    im: 0.0,
                })
            };
            let (Ok(a), Ok(b)) = (g.eval(&env), p.eval(&env)) else {
                continue;
            };
            if !same(a, b) {
                return false;
            }
            good += 1;
        }
        good >= needed
    }

    fn close(&self, a: Complex, b: Complex) -> bool {
        let diff = a.sub_abs(b);
        diff <= ABSOLUTE_TOLERANCE || diff <= self.options.relative_tolerance * a.abs().max(b.abs())
    }
}

/// `x < c` as `(-\infty, c)`, `c \le x` as `[c, \infty)`, …: a strict or
/// non-strict inequality between one variable and a constant.
fn ray(op: Rel, lhs: &Expr, rhs: &Expr) -> Option<Interval> {
    let closed = match op {
        Rel::Lt => false,
        Rel::Le => true,
        Rel::Eq | Rel::Ne => return None,
    };
    let infinity = || Expr::Const(Constant::Infinity);
    let is_constant = |e: &Expr| {
        let mut vars = BTreeSet::new();
        e.variables(&mut vars);
        vars.is_empty()
    };
    match (lhs, rhs) {
        (Expr::Var(_), c) if is_constant(c) => Some(Interval {
            left_closed: false,
            lo: Expr::Neg(Box::new(infinity())),
            hi: c.clone(),
            right_closed: closed,
        }),
        (c, Expr::Var(_)) if is_constant(c) => Some(Interval {
            left_closed: closed,
            lo: c.clone(),
            hi: infinity(),
            right_closed: false,
        }),
        _ => None,
    }
}

fn hundred() -> Expr {
    Expr::Num {
        value: 100.0,
        exact: super::expr::Rational::new(100, 1),
    }
}

fn difference((lhs, rhs): (&Expr, &Expr)) -> Expr {
    Expr::Sub(Box::new(lhs.clone()), Box::new(rhs.clone()))
}

/// A one-column or one-row matrix as a vector.
fn vector(m: &[Vec<Answer>]) -> Option<Vec<Answer>> {
    if m.len() == 1 {
        return m.first().cloned();
    }
    m.iter()
        .map(|row| (row.len() == 1).then(|| row[0].clone()))
        .collect()
}

/// A deterministic pseudo-random value in `[0.3, 2.3)` for `name` at `point`
/// (SplitMix64 over an FNV-1a hash of the name).
fn sample(name: &str, point: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h.wrapping_add(point.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    0.3 + 2.0 * ((z >> 11) as f64 / (1u64 << 53) as f64)
}
