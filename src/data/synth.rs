//! Synthetic reasoning tasks with gold answers: multi-step arithmetic, linear equations with
//! integer solutions, and countdown puzzles. Every task is a pure function of
//! (kind, difficulty, seed, index), so any subset can be regenerated anywhere.
//!
//! Difficulty runs from 1 to [`MAX_DIFFICULTY`] and raises the number of steps and the operand
//! sizes. Ids are `synth-<kind>-d<difficulty>-<seed>-<index>`, e.g. `synth-arith-d3-42-7`.
//!
//! Countdown gold: the task asks for an expression that uses each given number exactly once
//! with `+ - * /` and parentheses and evaluates to the target. [`SynthTask::answer`] holds one
//! reference expression (e.g. `(3 + 5) * 4 - 2`); the problem's metadata holds `numbers` (JSON
//! array) and `target` (integer) and `verifier: "countdown"`. A candidate is correct when
//! [`verify_countdown`] accepts it — comparing text with the reference is not the check.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use super::errors::{DataError, Result};
use super::hashing::sha256_u64;
use super::sources::Problem;

/// Highest difficulty level.
pub const MAX_DIFFICULTY: u32 = 8;

/// The family of a synthetic task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// Apply a chain of `+ - * /` steps to a start value.
    Arithmetic,
    /// Solve `a·x + b = c·x + e` for an integer `x`.
    LinearEquation,
    /// Combine the given numbers, each once, to reach a target.
    Countdown,
}

impl TaskKind {
    /// Every task kind.
    pub const ALL: [TaskKind; 3] = [
        TaskKind::Arithmetic,
        TaskKind::LinearEquation,
        TaskKind::Countdown,
    ];

    /// Short name used in ids and sources: `arith`, `linear`, `countdown`.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Arithmetic => "arith",
            TaskKind::LinearEquation => "linear",
            TaskKind::Countdown => "countdown",
        }
    }

    /// The kind called `name` (as returned by [`TaskKind::name`]).
    pub fn from_name(name: &str) -> Result<Self> {
        TaskKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                DataError::InvalidConfig(format!(
                    "unknown synthetic task `{name}` (known: arith, linear, countdown)"
                ))
            })
    }
}

/// An arithmetic operation on integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Addition.
    Add,
    /// Subtraction.
    Sub,
    /// Multiplication.
    Mul,
    /// Exact division.
    Div,
}

impl Op {
    /// The operator symbol: `+`, `-`, `*`, `/`.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
        }
    }

    /// `left op right`; `None` on overflow or inexact or zero division.
    pub fn apply(self, left: i64, right: i64) -> Option<i64> {
        match self {
            Op::Add => left.checked_add(right),
            Op::Sub => left.checked_sub(right),
            Op::Mul => left.checked_mul(right),
            Op::Div => (right != 0 && left % right == 0).then(|| left / right),
        }
    }

    /// The operation undoing this one (for verification steps).
    pub fn inverse(self) -> Op {
        match self {
            Op::Add => Op::Sub,
            Op::Sub => Op::Add,
            Op::Mul => Op::Div,
            Op::Div => Op::Mul,
        }
    }

    /// Whether this is `*` or `/` (binds tighter than `+` and `-`).
    fn is_multiplicative(self) -> bool {
        matches!(self, Op::Mul | Op::Div)
    }
}

/// One step `op operand` of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The operation.
    pub op: Op,
    /// Its right-hand operand.
    pub operand: i64,
}

/// The structured content of a task, from which text and reasoning are rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskSpec {
    /// Start with `start`, apply `steps` in order.
    Arithmetic {
        /// Start value.
        start: i64,
        /// Steps applied left to right.
        steps: Vec<Step>,
    },
    /// `a·x + b = c·x + e` with solution `x` (`c == 0`: the right side is the constant `e`).
    Linear {
        /// Left coefficient.
        a: i64,
        /// Left constant.
        b: i64,
        /// Right coefficient (`0` when the right side is constant; else `a > c`).
        c: i64,
        /// Right constant.
        e: i64,
        /// The solution.
        x: i64,
    },
    /// Reach `target` from `numbers`; the reference solution starts with `first` and applies
    /// `steps` left to right.
    Countdown {
        /// The numbers as shown to the solver (ascending).
        numbers: Vec<i64>,
        /// The value to reach.
        target: i64,
        /// First number of the reference solution.
        first: i64,
        /// Remaining reference steps, each using one more number.
        steps: Vec<Step>,
    },
}

/// A generated task with its gold answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthTask {
    /// `synth-<kind>-d<difficulty>-<seed>-<index>`.
    pub id: String,
    /// The task family.
    pub kind: TaskKind,
    /// Difficulty level, 1..=[`MAX_DIFFICULTY`].
    pub difficulty: u32,
    /// Seed of the task set.
    pub seed: u64,
    /// Position of the task in its set.
    pub index: u64,
    /// The question text.
    pub problem: String,
    /// The gold answer (a number; for countdown a reference expression).
    pub answer: String,
    /// The structure behind the text.
    pub spec: TaskSpec,
}

impl SynthTask {
    /// The task as a [`Problem`] with source `synth-<kind>` and metadata `kind`,
    /// `difficulty`, `seed`, `index` (and for countdown `numbers`, `target`, `verifier`).
    pub fn to_problem(&self) -> Problem {
        let mut metadata = Map::new();
        metadata.insert("kind".into(), json!(self.kind.name()));
        metadata.insert("difficulty".into(), json!(self.difficulty));
        metadata.insert("seed".into(), json!(self.seed));
        metadata.insert("index".into(), json!(self.index));
        if let TaskSpec::Countdown {
            numbers, target, ..
        } = &self.spec
        {
            metadata.insert("numbers".into(), Value::from(numbers.clone()));
            metadata.insert("target".into(), json!(target));
            metadata.insert("verifier".into(), json!("countdown"));
        }
        Problem {
            id: self.id.clone(),
            source: format!("synth-{}", self.kind.name()),
            problem: self.problem.clone(),
            answer: self.answer.clone(),
            metadata,
        }
    }
}

/// Generates task `index` of the set (kind, difficulty, seed); independent of other indices.
pub fn generate_task(kind: TaskKind, difficulty: u32, seed: u64, index: u64) -> Result<SynthTask> {
    if !(1..=MAX_DIFFICULTY).contains(&difficulty) {
        return Err(DataError::InvalidConfig(format!(
            "difficulty {difficulty} is outside 1..={MAX_DIFFICULTY}"
        )));
    }
    let id = format!("synth-{}-d{difficulty}-{seed}-{index}", kind.name());
    let mut rng = ChaCha8Rng::seed_from_u64(sha256_u64(id.as_bytes()));
    let spec = match kind {
        TaskKind::Arithmetic => arithmetic_spec(&mut rng, difficulty),
        TaskKind::LinearEquation => linear_spec(&mut rng, difficulty),
        TaskKind::Countdown => countdown_spec(&mut rng, difficulty),
    };
    Ok(SynthTask {
        id,
        kind,
        difficulty,
        seed,
        index,
        problem: problem_text(&spec),
        answer: gold_answer(&spec),
        spec,
    })
}

/// Generates tasks `0..count` of the set (kind, difficulty, seed).
pub fn generate_tasks(
    kind: TaskKind,
    difficulty: u32,
    seed: u64,
    count: u64,
) -> Result<Vec<SynthTask>> {
    (0..count)
        .map(|index| generate_task(kind, difficulty, seed, index))
        .collect()
}

/// Largest operand of a `+`/`-` step or a start value at `difficulty`.
fn operand_limit(difficulty: u32) -> i64 {
    5 + 5 * i64::from(difficulty)
}

fn arithmetic_spec(rng: &mut ChaCha8Rng, difficulty: u32) -> TaskSpec {
    let limit = operand_limit(difficulty);
    let max_factor = (2 + i64::from(difficulty)).min(9);
    let start = rng.random_range(1..=limit);
    let mut value = start;
    let mut steps = Vec::new();
    for _ in 0..=difficulty {
        let factor = rng.random_range(2..=max_factor);
        let candidates = [
            Step {
                op: Op::Add,
                operand: rng.random_range(1..=limit),
            },
            Step {
                op: Op::Sub,
                operand: rng.random_range(1..=limit),
            },
            Step {
                op: Op::Mul,
                operand: factor,
            },
            Step {
                op: Op::Div,
                operand: factor,
            },
        ];
        let allowed: Vec<Step> = candidates
            .into_iter()
            .filter(|step| match step.op {
                Op::Sub => value - step.operand >= 0,
                Op::Mul => value * step.operand <= 1000,
                Op::Div => difficulty >= 3 && value > 0 && value % step.operand == 0,
                Op::Add => true,
            })
            .collect();
        let step = allowed[rng.random_range(0..allowed.len())];
        value = step.op.apply(value, step.operand).unwrap_or(value);
        steps.push(step);
    }
    TaskSpec::Arithmetic { start, steps }
}

fn linear_spec(rng: &mut ChaCha8Rng, difficulty: u32) -> TaskSpec {
    let limit = operand_limit(difficulty);
    let max_coefficient = 2 + i64::from(difficulty);
    let x = if difficulty >= 5 {
        rng.random_range(-limit / 2..=limit / 2)
    } else {
        rng.random_range(1..=10)
    };
    let a = if difficulty == 1 {
        1
    } else {
        rng.random_range(2..=max_coefficient)
    };
    let b = if difficulty >= 3 {
        rng.random_range(-limit..=limit)
    } else {
        rng.random_range(1..=limit)
    };
    let c = if difficulty >= 4 {
        rng.random_range(1..a)
    } else {
        0
    };
    TaskSpec::Linear {
        a,
        b,
        c,
        e: (a - c) * x + b,
        x,
    }
}

fn countdown_spec(rng: &mut ChaCha8Rng, difficulty: u32) -> TaskSpec {
    let count = (2 + difficulty / 2) as usize;
    let limit = operand_limit(difficulty).min(50);
    let drawn: Vec<i64> = (0..count).map(|_| rng.random_range(1..=limit)).collect();
    let first = drawn[0];
    let mut value = first;
    let mut steps = Vec::new();
    for &number in &drawn[1..] {
        let mut allowed = vec![Op::Add];
        if value - number > 0 {
            allowed.push(Op::Sub);
        }
        if number > 1 && value > 1 && value * number <= 1000 {
            allowed.push(Op::Mul);
        }
        if number > 1 && value % number == 0 {
            allowed.push(Op::Div);
        }
        allowed.shuffle(rng);
        let op = allowed[0];
        value = op.apply(value, number).unwrap_or(value);
        steps.push(Step {
            op,
            operand: number,
        });
    }
    let mut numbers = drawn;
    numbers.sort_unstable();
    TaskSpec::Countdown {
        numbers,
        target: value,
        first,
        steps,
    }
}

/// Applies `steps` to `start`, returning every intermediate value (first is `start`).
pub fn run_steps(start: i64, steps: &[Step]) -> Vec<i64> {
    let mut values = vec![start];
    let mut value = start;
    for step in steps {
        value = step.op.apply(value, step.operand).unwrap_or(value);
        values.push(value);
    }
    values
}

/// `start op1 n1 op2 n2 …` evaluated left to right, with only the parentheses precedence needs.
pub fn chain_expression(start: i64, steps: &[Step]) -> String {
    let mut text = start.to_string();
    let mut top_level: Option<Op> = None;
    for step in steps {
        if step.op.is_multiplicative() && top_level.is_some_and(|op| !op.is_multiplicative()) {
            text = format!("({text})");
        }
        top_level = Some(step.op);
        text = format!("{text} {} {}", step.op.symbol(), step.operand);
    }
    text
}

/// `a·x + b` as text, e.g. `3x - 5`, `x + 2`, `-x`.
pub fn linear_side(coefficient: i64, constant: i64) -> String {
    let variable = match coefficient {
        0 => String::new(),
        1 => "x".to_string(),
        -1 => "-x".to_string(),
        k => format!("{k}x"),
    };
    match (variable.is_empty(), constant) {
        (true, c) => c.to_string(),
        (false, 0) => variable,
        (false, c) if c < 0 => format!("{variable} - {}", -c),
        (false, c) => format!("{variable} + {c}"),
    }
}

fn problem_text(spec: &TaskSpec) -> String {
    match spec {
        TaskSpec::Arithmetic { start, steps } => {
            let mut text = format!("Start with {start}.");
            for step in steps {
                let phrase = match step.op {
                    Op::Add => "Add",
                    Op::Sub => "Subtract",
                    Op::Mul => "Multiply by",
                    Op::Div => "Divide by",
                };
                text.push_str(&format!(" {phrase} {}.", step.operand));
            }
            text.push_str(" What is the result?");
            text
        }
        TaskSpec::Linear { a, b, c, e, .. } => {
            format!(
                "Solve for x: {} = {}.",
                linear_side(*a, *b),
                linear_side(*c, *e)
            )
        }
        TaskSpec::Countdown {
            numbers, target, ..
        } => {
            let listed: Vec<String> = numbers.iter().map(i64::to_string).collect();
            format!(
                "Use the numbers {} once each with + - * / to make {target}.",
                listed.join(", ")
            )
        }
    }
}

fn gold_answer(spec: &TaskSpec) -> String {
    match spec {
        TaskSpec::Arithmetic { start, steps } => run_steps(*start, steps)
            .last()
            .copied()
            .unwrap_or(*start)
            .to_string(),
        TaskSpec::Linear { x, .. } => x.to_string(),
        TaskSpec::Countdown { first, steps, .. } => chain_expression(*first, steps),
    }
}

/// Whether `expression` uses exactly the multiset `numbers`, only `+ - * /` and parentheses,
/// and evaluates exactly (rational arithmetic) to `target`. A trailing `= <target>` is allowed,
/// as are LaTeX `\times`, `\cdot`, `\div` and `×`, `÷`.
pub fn verify_countdown(expression: &str, numbers: &[i64], target: i64) -> bool {
    let normalized = expression
        .replace("\\times", "*")
        .replace("\\cdot", "*")
        .replace('×', "*")
        .replace("\\div", "/")
        .replace('÷', "/");
    let expression = match normalized.split_once('=') {
        Some((left, right)) if right.trim() == target.to_string() => left.to_string(),
        Some(_) => return false,
        None => normalized,
    };
    let mut parser = ExpressionParser {
        bytes: expression.as_bytes(),
        position: 0,
        used: Vec::new(),
    };
    let Some(value) = parser.sum() else {
        return false;
    };
    parser.skip_spaces();
    if parser.position != parser.bytes.len() {
        return false;
    }
    let mut used = parser.used;
    let mut expected = numbers.to_vec();
    used.sort_unstable();
    expected.sort_unstable();
    used == expected && value == (i128::from(target), 1)
}

/// Recursive-descent evaluator over exact fractions `(numerator, denominator > 0)`.
struct ExpressionParser<'a> {
    bytes: &'a [u8],
    position: usize,
    used: Vec<i64>,
}

type Fraction = (i128, i128);

fn reduce((numerator, denominator): Fraction) -> Option<Fraction> {
    if denominator == 0 {
        return None;
    }
    let (mut a, mut b) = (numerator.abs(), denominator.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let divisor = a.max(1) * denominator.signum();
    Some((numerator / divisor, denominator / divisor))
}

impl ExpressionParser<'_> {
    fn skip_spaces(&mut self) {
        while self
            .bytes
            .get(self.position)
            .is_some_and(u8::is_ascii_whitespace)
        {
            self.position += 1;
        }
    }

    fn next_is(&mut self, symbols: &[u8]) -> Option<u8> {
        self.skip_spaces();
        let byte = *self.bytes.get(self.position)?;
        symbols.contains(&byte).then(|| {
            self.position += 1;
            byte
        })
    }

    fn sum(&mut self) -> Option<Fraction> {
        let mut value = self.product()?;
        while let Some(symbol) = self.next_is(b"+-") {
            let (n, d) = self.product()?;
            let sign = if symbol == b'+' { 1 } else { -1 };
            value = reduce((
                value
                    .0
                    .checked_mul(d)?
                    .checked_add(sign * n.checked_mul(value.1)?)?,
                value.1.checked_mul(d)?,
            ))?;
        }
        Some(value)
    }

    fn product(&mut self) -> Option<Fraction> {
        let mut value = self.atom()?;
        while let Some(symbol) = self.next_is(b"*/") {
            let (n, d) = self.atom()?;
            value = if symbol == b'*' {
                reduce((value.0.checked_mul(n)?, value.1.checked_mul(d)?))?
            } else {
                reduce((value.0.checked_mul(d)?, value.1.checked_mul(n)?))?
            };
        }
        Some(value)
    }

    fn atom(&mut self) -> Option<Fraction> {
        if self.next_is(b"(").is_some() {
            let value = self.sum()?;
            self.next_is(b")")?;
            return Some(value);
        }
        self.skip_spaces();
        let start = self.position;
        while self
            .bytes
            .get(self.position)
            .is_some_and(u8::is_ascii_digit)
        {
            self.position += 1;
        }
        let number: i64 = std::str::from_utf8(&self.bytes[start..self.position])
            .ok()?
            .parse()
            .ok()?;
        self.used.push(number);
        Some((i128::from(number), 1))
    }
}
